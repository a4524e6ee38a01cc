// Host side of the GPU quantizers: the steps of gptq.cpp in the same order, with the
// d×d and o×d work on the device (cuSOLVER Cholesky + triangular inverse, the lazy-batch
// kernel, cuBLAS for the trailing update) and the O(d) bookkeeping (dead columns,
// act-order permutation, damping escalation) on the host exactly as the CPU does it.
#include "quant/cuda/gptq_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "kernels/cuda/cuda_context.h"
#include "quant/cuda/quant_kernels.h"

namespace qshard {

namespace {

using cuda::CudaContext;

// A device F32 copy of a host (any float dtype) or device F32 tensor.
Tensor to_device_f32(CudaContext& ctx, const Tensor& t, bool copy_device) {
  if (t.device() == Device::Cuda) {
    QS_ASSERT(t.dtype() == DType::F32, "GPU quantizer: device tensors must be F32, got ",
              dtype_name(t.dtype()));
    if (!copy_device) return t;
    Tensor c = ctx.empty(DType::F32, t.shape());
    QS_CUDA_CHECK(cudaMemcpyAsync(c.raw(), t.raw(), t.nbytes(), cudaMemcpyDeviceToDevice, ctx.stream()));
    return c;
  }
  const Tensor h = t.dtype() == DType::F32 ? t : t.to_f32();
  Tensor c = ctx.empty(DType::F32, h.shape());
  QS_CUDA_CHECK(cudaMemcpyAsync(c.raw(), h.raw(), h.nbytes(), cudaMemcpyHostToDevice, ctx.stream()));
  ctx.sync();  // h may be a temporary
  return c;
}

template <class T>
Tensor upload_vector(CudaContext& ctx, const std::vector<T>& v, DType dtype) {
  Tensor t = ctx.empty(dtype, {int64_t(v.size())});
  if (!v.empty())
    QS_CUDA_CHECK(cudaMemcpyAsync(t.raw(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice,
                                  ctx.stream()));
  return t;
}

template <class T>
void download_into(CudaContext& ctx, const Tensor& t, std::vector<T>& out) {
  out.resize(size_t(t.nbytes() / sizeof(T)));
  if (!out.empty())
    QS_CUDA_CHECK(cudaMemcpyAsync(out.data(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, ctx.stream()));
}

int read_flag(CudaContext& ctx, const Tensor& flag) {
  int v = 0;
  QS_CUDA_CHECK(cudaMemcpyAsync(&v, flag.raw(), sizeof v, cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.sync();
  return v;
}

cuda::DevFormat dev_format(const QuantFormat& f) {
  cuda::DevFormat d;
  d.family = int(f.family);
  d.bits = f.bits;
  d.symmetric = f.symmetric ? 1 : 0;
  return d;
}

cuda::DevClip dev_clip(const ClipSearch& c) {
  cuda::DevClip d;
  d.enabled = c.enabled ? 1 : 0;
  d.steps = int(std::floor(double(c.max_shrink) * c.grid + 1e-6));  // as rtn.cpp
  d.grid = c.grid;
  d.norm = c.norm;
  return d;
}

// max|w| and finiteness of a device tensor; the tensor scale the scheme would choose.
struct AmaxResult {
  float amax = 0;
  bool finite = true;
};
AmaxResult amax_of(CudaContext& ctx, const Tensor& w) {
  Tensor scratch = ctx.zeros(DType::I32, {2});
  auto* p = scratch.data<int32_t>();
  cuda::amax_and_finite(w.data<float>(), w.numel(), reinterpret_cast<float*>(p), p + 1, ctx.stream());
  int32_t host[2] = {0, 0};
  QS_CUDA_CHECK(cudaMemcpyAsync(host, p, sizeof host, cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.sync();
  AmaxResult r;
  std::memcpy(&r.amax, &host[0], sizeof(float));
  r.finite = host[1] == 0;
  return r;
}

// Scheme::tensor_scale from the amax (NVFP4Scheme::tensor_scale's formula).
float tensor_scale_from(const QuantFormat& f, float amax) {
  if (f.family != FormatFamily::NVFP4 || amax == 0.0f) return 1.0f;
  return float(double(amax) / (6.0 * 448.0));
}

// RAII for cuSOLVER's 64-bit API parameters.
struct SolverParams {
  cusolverDnParams_t p = nullptr;
  SolverParams() { QS_CUSOLVER_CHECK(cusolverDnCreateParams(&p)); }
  ~SolverParams() { cusolverDnDestroyParams(p); }
  SolverParams(const SolverParams&) = delete;
  SolverParams& operator=(const SolverParams&) = delete;
};

// gptq.cpp inverse_factor on the device: U (column-major, upper) in `u`; false when
// H + damp·I is not numerically positive definite, by the CPU's three criteria.
bool inverse_factor_cuda(CudaContext& ctx, const Tensor& h, const Tensor& perm,
                         const Tensor& dead, int64_t d, double damp_abs, Tensor& u,
                         Tensor& diag, Tensor& flag) {
  const cudaStream_t s = ctx.stream();
  float* a = u.data<float>();
  cuda::build_reversed_hessian(h.data<float>(), perm.data<int32_t>(), dead.data<uint8_t>(), d,
                               damp_abs, a, diag.data<float>(), s);
  SolverParams params;
  size_t dev_bytes = 0, host_bytes = 0;
  QS_CUSOLVER_CHECK(cusolverDnXpotrf_bufferSize(ctx.cusolver(), params.p, CUBLAS_FILL_MODE_LOWER, d,
                                                CUDA_R_32F, a, d, CUDA_R_32F, &dev_bytes, &host_bytes));
  Tensor work = ctx.empty(DType::U8, {int64_t(std::max<size_t>(dev_bytes, 1))});
  std::vector<char> host_work(std::max<size_t>(host_bytes, 1));
  Tensor info = ctx.zeros(DType::I32, {1});
  QS_CUSOLVER_CHECK(cusolverDnXpotrf(ctx.cusolver(), params.p, CUBLAS_FILL_MODE_LOWER, d, CUDA_R_32F,
                                     a, d, CUDA_R_32F, work.raw(), dev_bytes, host_work.data(),
                                     host_bytes, info.data<int>()));
  if (read_flag(ctx, info) != 0) return false;
  QS_CUDA_CHECK(cudaMemsetAsync(flag.raw(), 0, sizeof(int), s));
  cuda::check_pivots(a, diag.data<float>(), d, flag.data<int>(), s);
  if (read_flag(ctx, flag) != 0) return false;

  size_t tdev = 0, thost = 0;
  QS_CUSOLVER_CHECK(cusolverDnXtrtri_bufferSize(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER,
                                                CUBLAS_DIAG_NON_UNIT, d, CUDA_R_32F, a, d, &tdev,
                                                &thost));
  Tensor twork = ctx.empty(DType::U8, {int64_t(std::max<size_t>(tdev, 1))});
  std::vector<char> thost_work(std::max<size_t>(thost, 1));
  QS_CUSOLVER_CHECK(cusolverDnXtrtri(ctx.cusolver(), CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, d,
                                     CUDA_R_32F, a, d, twork.raw(), tdev, thost_work.data(), thost,
                                     info.data<int>()));
  if (read_flag(ctx, info) != 0) return false;
  QS_CUDA_CHECK(cudaMemsetAsync(flag.raw(), 0, sizeof(int), s));
  cuda::reverse_and_check_upper(a, d, flag.data<int>(), s);
  return read_flag(ctx, flag) == 0;
}

}  // namespace

GptqResult gptq_quantize_cuda(CudaContext& ctx, const Tensor& weight_in, const Tensor& hessian_in,
                              const Scheme& scheme, const GptqOptions& options,
                              const std::string& name) {
  const double t_start = wall_seconds();
  const QuantFormat& fmt = scheme.format();
  const cudaStream_t stream = ctx.stream();
  // ---- the CPU's argument checks, same order and messages
  if (weight_in.ndim() != 2) fail_input("GPTQ of ", name, ": weight must be 2-D, got ", shape_str(weight_in.shape()));
  const int64_t o = weight_in.dim(0), d = weight_in.dim(1);
  if (hessian_in.ndim() != 2 || hessian_in.dim(0) != d || hessian_in.dim(1) != d)
    fail_input("GPTQ of ", name, ": Hessian of shape ", shape_str(hessian_in.shape()),
               " does not match ", d, " input features");
  if (o <= 0 || d <= 0) fail_input("GPTQ of ", name, ": empty weight");
  if (options.block_size <= 0) fail_input("GPTQ of ", name, ": block size must be positive");
  if (!(options.damp >= 0) || !std::isfinite(options.damp))
    fail_input("GPTQ of ", name, ": damping must be a finite non-negative number");
  fmt.check_divides(d, name);
  const bool is_int = fmt.family == FormatFamily::Int;
  const bool per_channel = is_int && fmt.group_size == -1;
  if (!is_int && options.act_order && !options.static_groups)
    fail_input("GPTQ of ", name, ": act-order with ", fmt.describe(),
               " needs static groups; use --static-groups or drop act-order");
  QS_ASSERT(d <= std::numeric_limits<int32_t>::max() && o <= std::numeric_limits<int32_t>::max(),
            "GPTQ on the GPU: ", o, "x", d, " exceeds int32 indices");

  // Working weight: W0 (original order) is consumed; the Hessian is only read.
  Tensor w0 = to_device_f32(ctx, weight_in, /*copy_device=*/true);
  Tensor h = to_device_f32(ctx, hessian_in, /*copy_device=*/false);
  const AmaxResult wa = amax_of(ctx, w0);
  if (!wa.finite) fail_input("GPTQ of ", name, ": weight has NaN or Inf values");
  if (!amax_of(ctx, h).finite) fail_input("GPTQ of ", name, ": Hessian has NaN or Inf values");

  const int64_t G = fmt.group_width(d);
  const int64_t ng = fmt.n_groups(d);
  const float ts = tensor_scale_from(fmt, wa.amax);
  const cuda::DevFormat dfmt = dev_format(fmt);
  const cuda::DevClip dclip = dev_clip(options.clip);

  int mode;
  if (per_channel) mode = cuda::kPerChannel;
  else if (options.static_groups) mode = cuda::kStatic;
  else if (is_int) mode = cuda::kDynamic;
  else mode = options.block_gptq == BlockGptq::Microblock ? cuda::kMicroBlock : cuda::kBlockColumnwise;
  int64_t B = options.block_size;
  if (mode == cuda::kMicroBlock || mode == cuda::kBlockColumnwise) B = (B + G - 1) / G * G;
  const size_t shared = cuda::gptq_block_shared_bytes(std::min(B, d), mode);
  {
    int optin = 0;
    QS_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ctx.device()));
    if (shared > size_t(optin))
      fail_input("GPTQ of ", name, ": --block-size ", options.block_size, " needs ", shared,
                 " bytes of shared memory per block on the GPU, more than this device's ", optin,
                 "; use a smaller --block-size (128 is the default)");
  }

  GptqResult res;
  QuantizedLinear& q = res.q;
  q.format = fmt;
  q.out_features = o;
  q.in_features = d;
  q.g_idx.assign(size_t(d), 0);
  q.tensor_scale = ts;

  Tensor scales = ctx.zeros(DType::F32, {o, ng});
  Tensor zeros = is_int ? ctx.zeros(DType::F32, {o, ng}) : Tensor();
  float* zeros_p = is_int ? zeros.data<float>() : nullptr;
  Tensor cur_scale = ctx.zeros(DType::F32, {o});
  Tensor cur_zero = ctx.zeros(DType::F32, {o});
  Tensor flags = ctx.zeros(DType::I32, {1});

  // 1. Per-channel parameters on the original full row.
  if (mode == cuda::kPerChannel) {
    cuda::rtn_groups(w0.data<float>(), o, d, d, dfmt, dclip, ts, nullptr, scales.data<float>(),
                     zeros_p, flags.data<int>(), stream);
    QS_CUDA_CHECK(cudaMemcpyAsync(cur_scale.raw(), scales.raw(), size_t(o) * 4, cudaMemcpyDeviceToDevice, stream));
    QS_CUDA_CHECK(cudaMemcpyAsync(cur_zero.raw(), zeros.raw(), size_t(o) * 4, cudaMemcpyDeviceToDevice, stream));
  }

  // 2. Dead inputs, from H's diagonal (a strided copy of d floats).
  std::vector<float> hd(static_cast<size_t>(d));
  QS_CUDA_CHECK(cudaMemcpy2DAsync(hd.data(), sizeof(float), h.data<float>(), size_t(d + 1) * sizeof(float),
                                  sizeof(float), size_t(d), cudaMemcpyDeviceToHost, stream));
  ctx.sync();
  std::vector<uint8_t> dead(static_cast<size_t>(d), 0);
  int64_t n_dead = 0;
  for (int64_t j = 0; j < d; ++j)
    if (hd[size_t(j)] == 0.0f) dead[size_t(j)] = 1, ++n_dead;
  const Tensor dead_d = upload_vector(ctx, dead, DType::U8);

  // 3. Static groups: fitted after dead-zeroing, before permutation.
  if (n_dead > 0) cuda::zero_dead_columns(w0.data<float>(), o, d, dead_d.data<uint8_t>(), stream);
  if (mode == cuda::kStatic)
    cuda::rtn_groups(w0.data<float>(), o, d, G, dfmt, dclip, ts, nullptr, scales.data<float>(),
                     zeros_p, flags.data<int>(), stream);

  // 4. Act-order permutation: descending diag H (dead diagonals count as 1), stable.
  std::vector<int64_t> perm(static_cast<size_t>(d));
  std::iota(perm.begin(), perm.end(), int64_t(0));
  std::vector<double> hdiag(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) hdiag[size_t(j)] = dead[size_t(j)] ? 1.0 : double(hd[size_t(j)]);
  if (options.act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return hdiag[size_t(a)] > hdiag[size_t(b)]; });
  std::vector<int32_t> perm32(perm.begin(), perm.end());
  const Tensor perm_d = upload_vector(ctx, perm32, DType::I32);

  Tensor W = ctx.empty(DType::F32, {o, d});
  cuda::permute_columns(w0.data<float>(), W.data<float>(), o, d, perm_d.data<int32_t>(), stream);
  w0 = Tensor();  // freed in stream order

  // 5./6. Damping and the inverse factor, escalating the damping if H is not PD.
  double mean_diag = 0;
  for (double v : hdiag) mean_diag += v;
  mean_diag /= double(d);
  Tensor U = ctx.empty(DType::F32, {d, d});
  Tensor diag = ctx.empty(DType::F32, {d});
  Tensor pd_flag = ctx.zeros(DType::I32, {1});
  double damp = options.damp;
  const double t_f0 = wall_seconds();
  for (;;) {
    if (inverse_factor_cuda(ctx, h, perm_d, dead_d, d, damp * mean_diag, U, diag, pd_flag)) break;
    if (damp >= 1.0)
      fail_input("GPTQ of ", name, ": Hessian is not positive definite even with damping ", damp,
                 " × mean(diag H); its calibration statistics are broken");
    const double next = std::min(1.0, std::max(damp * 10.0, 0.01));
    log_warn("GPTQ of ", name, ": Hessian + ", damp, "·mean(diag)·I is not positive definite; "
             "retrying with damping ", next);
    damp = next;
    ++res.damp_escalations;
  }
  res.damp_used = damp;
  res.damp_abs = damp * mean_diag;
  h = Tensor();  // only the retries above needed it
  const double t_factor = wall_seconds() - t_f0;

  // Main loop: per lazy batch, the column kernel then W[:, i2:] −= E · U[i1:i2, i2:].
  Tensor codes_p = ctx.zeros(DType::U8, {o, d});
  Tensor E = ctx.zeros(DType::F32, {o, B});
  Tensor ublk = ctx.empty(DType::F32, {std::min(B, d), std::min(B, d)});
  Tensor loss_rows = ctx.zeros(DType::F64, {o});
  const double t_l0 = wall_seconds();
  cuda::GptqBlockArgs a;
  a.W = W.data<float>();
  a.o = o;
  a.d = d;
  a.B = B;
  a.ublk = ublk.data<float>();
  a.E = E.data<float>();
  a.codes_p = codes_p.data<uint8_t>();
  a.scales = scales.data<float>();
  a.zeros = zeros_p;
  a.ng = ng;
  a.G = G;
  a.cur_scale = cur_scale.data<float>();
  a.cur_zero = cur_zero.data<float>();
  a.perm = perm_d.data<int32_t>();
  a.mode = mode;
  a.format = dfmt;
  a.clip = dclip;
  a.tensor_scale = ts;
  a.loss_rows = loss_rows.data<double>();
  a.flags = flags.data<int>();
  const float minus_one = -1.0f, one = 1.0f;
  for (int64_t i1 = 0; i1 < d; i1 += B) {
    const int64_t i2 = std::min(i1 + B, d), nb = i2 - i1;
    cuda::copy_u_block(U.data<float>(), d, i1, nb, ublk.data<float>(), stream);
    a.i1 = i1;
    a.nb = nb;
    cuda::gptq_block(a, stream);
    if (i2 < d) {
      // Row-major W[o, d] is column-major Wᵀ (d×o, ld d); E[o, B] is Eᵀ (B×o, ld B);
      // U[i1:i2, i2:] is column-major nb×(d−i2) at U + i1 + i2·d. Then
      // Wᵀ[i2:, :] −= U[i1:i2, i2:]ᵀ · Eᵀ[:nb, :]. Plain fp32 (no TF32), as the CPU.
      QS_CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, int(d - i2), int(o), int(nb),
                                  &minus_one, U.data<float>() + i1 + i2 * d, int(d), E.data<float>(),
                                  int(B), &one, W.data<float>() + i2, int(d)));
    }
  }
  if (read_flag(ctx, flags) != 0) fail_input("GPTQ of ", name, ": weight contains NaN/Inf");
  const double t_loop = wall_seconds() - t_l0;

  // Back to the original column order; g_idx.
  Tensor codes = ctx.empty(DType::U8, {o, d});
  cuda::unpermute_codes(codes_p.data<uint8_t>(), codes.data<uint8_t>(), o, d, perm_d.data<int32_t>(), stream);
  download_into(ctx, codes, q.codes);
  download_into(ctx, scales, q.scales);
  if (is_int) download_into(ctx, zeros, q.zeros);
  std::vector<double> loss;
  download_into(ctx, loss_rows, loss);
  ctx.sync();
  res.loss = std::accumulate(loss.begin(), loss.end(), 0.0);
  for (int64_t j = 0; j < d; ++j) {
    const int64_t c = perm[size_t(j)];
    q.g_idx[size_t(c)] = int32_t(mode == cuda::kDynamic ? j / G : c / G);
  }
  log_debug("GPTQ (cuda) of ", name, ": ", o, "x", d, " in ", wall_seconds() - t_start,
            " s (inverse factor ", t_factor, " s, main loop ", t_loop, " s)");
  if (n_dead > 0) log_debug("GPTQ of ", name, ": ", n_dead, " dead input columns");
  return res;
}

QuantizedLinear rtn_quantize_cuda(CudaContext& ctx, const Tensor& weight_in, const Scheme& scheme,
                                  const ClipSearch& clip, const std::string& name) {
  if (weight_in.ndim() != 2)
    fail_input("tensor ", name, ": expected a 2-D weight [out, in], got ", shape_str(weight_in.shape()));
  const QuantFormat& fmt = scheme.format();
  const int64_t out = weight_in.dim(0), in = weight_in.dim(1);
  fmt.check_divides(in, name);
  const Tensor w = to_device_f32(ctx, weight_in, /*copy_device=*/false);
  const AmaxResult wa = amax_of(ctx, w);
  if (!wa.finite) fail_input("tensor ", name, ": weight contains NaN/Inf");

  QuantizedLinear q;
  q.format = fmt;
  q.out_features = out;
  q.in_features = in;
  const int64_t gw = fmt.group_width(in), ng = fmt.n_groups(in);
  q.tensor_scale = tensor_scale_from(fmt, wa.amax);
  q.g_idx.resize(size_t(in));
  for (int64_t c = 0; c < in; ++c) q.g_idx[size_t(c)] = int32_t(c / gw);

  Tensor codes = ctx.empty(DType::U8, {out, in});
  Tensor scales = ctx.empty(DType::F32, {out, ng});
  const bool is_int = fmt.family == FormatFamily::Int;
  Tensor zeros = is_int ? ctx.empty(DType::F32, {out, ng}) : Tensor();
  Tensor flags = ctx.zeros(DType::I32, {1});
  cuda::rtn_groups(w.data<float>(), out, in, gw, dev_format(fmt), dev_clip(clip), q.tensor_scale,
                   codes.data<uint8_t>(), scales.data<float>(), is_int ? zeros.data<float>() : nullptr,
                   flags.data<int>(), ctx.stream());
  download_into(ctx, codes, q.codes);
  download_into(ctx, scales, q.scales);
  if (is_int) download_into(ctx, zeros, q.zeros);
  if (read_flag(ctx, flags) != 0) fail_input("tensor ", name, ": weight contains NaN/Inf");
  return q;
}

CudaHessian::CudaHessian(std::shared_ptr<CudaContext> ctx, int64_t in_features) : ctx_(std::move(ctx)) {
  if (in_features <= 0) fail_input("Hessian: in_features must be positive, got ", in_features);
  QS_ASSERT(in_features <= std::numeric_limits<int>::max(), "Hessian: ", in_features, " features");
  sum_ = ctx_->zeros(DType::F32, {in_features, in_features});
}

void CudaHessian::add(const Tensor& x) {
  const int64_t d = sum_.dim(0);
  if (x.device() != Device::Cuda || x.dtype() != DType::F32)
    fail("Hessian (cuda): activations must be F32 on the device, got ", dtype_name(x.dtype()));
  if (x.ndim() < 1 || x.dim(-1) != d)
    fail_input("Hessian: activations of shape ", shape_str(x.shape()), " do not end in ", d,
               " input features");
  const int64_t n = x.numel() / d;
  if (n == 0) return;
  // Row-major x[n, d] is column-major xᵀ (d×n, ld d): Σ xxᵀ = xᵀ·(xᵀ)ᵀ, one SSYRK into the
  // column-major upper triangle. Chunked so the token count fits cuBLAS's int.
  const float one = 1.0f;
  const int64_t chunk = int64_t(1) << 20;
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t m = std::min(chunk, n - t0);
    QS_CUBLAS_CHECK(cublasSsyrk(ctx_->cublas(), CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, int(d), int(m),
                                &one, x.data<float>() + t0 * d, int(d), &one, sum_.data<float>(),
                                int(d)));
  }
  tokens_ += n;
}

Tensor CudaHessian::sum_device() {
  cuda::mirror_upper(sum_.data<float>(), sum_.dim(0), ctx_->stream());
  return sum_;
}

Tensor CudaHessian::download() {
  const Tensor s = sum_device();
  Tensor host = Tensor::zeros(DType::F32, s.shape());
  QS_CUDA_CHECK(cudaMemcpyAsync(host.raw(), s.raw(), s.nbytes(), cudaMemcpyDeviceToHost, ctx_->stream()));
  ctx_->sync();
  return host;
}

}  // namespace qshard
