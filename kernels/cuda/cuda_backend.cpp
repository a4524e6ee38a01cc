// The CUDA backend: Tensor checks mirror the CPU backend's (same messages, same alias
// rules), then raw device pointers go to cuBLAS or to the launchers in cuda_kernels.h.
// Everything runs on the context's stream; download() is the only synchronization.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "kernels/backend_checks.h"
#include "kernels/cuda/cuda_kernels.h"

namespace qshard {

namespace {

constexpr int64_t kIntMax = std::numeric_limits<int>::max();

void expect(const Tensor& t, DType dtype, int ndim, const char* op, const char* arg) {
  backend_checks::expect(t, Device::Cuda, dtype, ndim, op, arg);
}
using backend_checks::overlaps;

// The dtypes the device converter reads directly; others are converted on the host.
bool device_convertible(DType t, cuda::SrcType& out) {
  switch (t) {
    case DType::F32: out = cuda::SrcType::F32; return true;
    case DType::BF16: out = cuda::SrcType::BF16; return true;
    case DType::F16: out = cuda::SrcType::F16; return true;
    default: return false;
  }
}

cublasComputeType_t compute_type(CudaMath m) {
  switch (m) {
    case CudaMath::Fp32: return CUBLAS_COMPUTE_32F;
    case CudaMath::Tf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case CudaMath::Bf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
  }
  return CUBLAS_COMPUTE_32F;
}

}  // namespace

CudaMath parse_cuda_math(const std::string& name) {
  if (name == "fp32") return CudaMath::Fp32;
  if (name == "tf32") return CudaMath::Tf32;
  if (name == "bf16") return CudaMath::Bf16;
  fail_input("QSHARD_CUDA_MATH='", name, "' is not one of fp32, tf32, bf16");
}

const char* cuda_math_name(CudaMath m) {
  switch (m) {
    case CudaMath::Fp32: return "fp32";
    case CudaMath::Tf32: return "tf32";
    case CudaMath::Bf16: return "bf16";
  }
  return "?";
}

CudaBackend::CudaBackend(const CudaBackendOptions& options)
    : ctx_(cuda::CudaContext::create(options.device)), math_(options.math) {}

Tensor CudaBackend::zeros(DType dtype, Shape shape) { return ctx_->zeros(dtype, std::move(shape)); }

Tensor CudaBackend::upload(const Tensor& host) {
  QS_ASSERT(host.defined() && host.device() == Device::Host, "upload: source is not a host tensor");
  if (host.dtype() == DType::I32) {
    Tensor t = ctx_->empty(DType::I32, host.shape());
    QS_CUDA_CHECK(cudaMemcpyAsync(t.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice,
                                  ctx_->stream()));
    return t;
  }
  QS_ASSERT(dtype_is_float(host.dtype()), "upload: ", dtype_name(host.dtype()), " ",
            shape_str(host.shape()), " is neither a float dtype nor I32");
  return upload_as(host, DType::F32);
}

Tensor CudaBackend::upload_as(const Tensor& host, DType dtype) {
  QS_ASSERT(host.defined() && host.device() == Device::Host && dtype_is_float(host.dtype()),
            "upload_as: source is not a host float tensor");
  QS_ASSERT(dtype == DType::F32 || dtype == DType::BF16, "upload_as: ", dtype_name(dtype),
            " is neither F32 nor BF16");
  const cudaStream_t s = ctx_->stream();
  if (host.dtype() == dtype) {  // bytes as they are
    Tensor t = ctx_->empty(dtype, host.shape());
    QS_CUDA_CHECK(cudaMemcpyAsync(t.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, s));
    return t;
  }
  cuda::SrcType src = cuda::SrcType::F32;
  Tensor f32;
  if (device_convertible(host.dtype(), src)) {
    Tensor raw = ctx_->empty(host.dtype(), host.shape());
    QS_CUDA_CHECK(cudaMemcpyAsync(raw.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, s));
    f32 = ctx_->empty(DType::F32, host.shape());
    cuda::convert_to_f32(src, raw.raw(), f32.data<float>(), host.numel(), s);
  } else {
    const Tensor h32 = host.to_f32();
    f32 = ctx_->empty(DType::F32, host.shape());
    QS_CUDA_CHECK(cudaMemcpyAsync(f32.raw(), h32.raw(), h32.nbytes(), cudaMemcpyHostToDevice, s));
    // h32 is pageable: the copy above has staged it before returning.
  }
  if (dtype == DType::F32) return f32;
  Tensor b = ctx_->empty(DType::BF16, host.shape());
  cuda::f32_to_bf16(f32.data<float>(), b.data<uint16_t>(), host.numel(), s);
  return b;
}

Tensor CudaBackend::download(const Tensor& t) {
  QS_ASSERT(t.defined() && t.device() == Device::Cuda, "download: not a cuda-backend tensor");
  Tensor host = Tensor::zeros(t.dtype(), t.shape());
  QS_CUDA_CHECK(cudaMemcpyAsync(host.raw(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost,
                                ctx_->stream()));
  ctx_->sync();
  return host;
}

void CudaBackend::linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  expect(x, DType::F32, 2, "linear", "x");
  QS_ASSERT(w.defined() && w.device() == Device::Cuda && w.ndim() == 2 &&
                (w.dtype() == DType::F32 || w.dtype() == DType::BF16),
            "linear: w ", dtype_name(w.dtype()), " ", shape_str(w.shape()),
            " should be a cuda-backend F32 or BF16 matrix");
  expect(y, DType::F32, 2, "linear", "y");
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  QS_ASSERT(w.dim(1) == k && y.dim(0) == m && y.dim(1) == n, "linear: x ", shape_str(x.shape()),
            " · w ", shape_str(w.shape()), "^T into y ", shape_str(y.shape()));
  if (bias) {
    expect(*bias, DType::F32, 1, "linear", "bias");
    QS_ASSERT(bias->dim(0) == n, "linear: bias ", shape_str(bias->shape()), " for w ",
              shape_str(w.shape()));
  }
  QS_ASSERT(!overlaps(y, x) && !overlaps(y, w), "linear: y overlaps an input");
  QS_ASSERT(std::max({m, n, k}) <= kIntMax, "linear: x ", shape_str(x.shape()), " w ",
            shape_str(w.shape()), " exceeds cuBLAS's int dimensions");
  const cudaStream_t s = ctx_->stream();
  if (m == 0 || n == 0) return;
  float beta = 0.0f;
  if (bias) {
    cuda::fill_rows(y.data<float>(), bias->data<float>(), m, n, s);
    beta = 1.0f;
  }
  if (k == 0) {
    if (!bias) QS_CUDA_CHECK(cudaMemsetAsync(y.raw(), 0, y.nbytes(), s));
    return;
  }
  // Row-major y[m,n] = x[m,k]·w[n,k]ᵀ is column-major yᵀ[n,m] = (wᵀ)ᵀ[n,k] · xᵀ[k,m]:
  // A = w read as a k×n column-major matrix (transposed), B = x as k×m.
  const float alpha = 1.0f;
  if (w.dtype() == DType::BF16) {
    Tensor xb = ctx_->empty(DType::BF16, x.shape());
    cuda::f32_to_bf16(x.data<float>(), xb.data<uint16_t>(), x.numel(), s);
    QS_CUBLAS_CHECK(cublasGemmEx(ctx_->cublas(), CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k),
                                 &alpha, w.raw(), CUDA_R_16BF, int(k), xb.raw(), CUDA_R_16BF,
                                 int(k), &beta, y.raw(), CUDA_R_32F, int(n), CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
    return;  // xb is freed in stream order, after the GEMM
  }
  QS_CUBLAS_CHECK(cublasGemmEx(ctx_->cublas(), CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k),
                               &alpha, w.raw(), CUDA_R_32F, int(k), x.raw(), CUDA_R_32F, int(k),
                               &beta, y.raw(), CUDA_R_32F, int(n), compute_type(math_),
                               CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  expect(x, DType::F32, 2, "rmsnorm", "x");
  expect(weight, DType::F32, 1, "rmsnorm", "weight");
  expect(y, DType::F32, 2, "rmsnorm", "y");
  QS_ASSERT(y.shape() == x.shape() && weight.dim(0) == x.dim(1), "rmsnorm: x ",
            shape_str(x.shape()), ", weight ", shape_str(weight.shape()), ", y ",
            shape_str(y.shape()));
  QS_ASSERT(y.raw() == x.raw() || !overlaps(y, x), "rmsnorm: y partially overlaps x");
  cuda::rmsnorm(x.data<float>(), weight.data<float>(), eps, y.data<float>(), x.dim(0), x.dim(1),
                ctx_->stream());
}

void CudaBackend::rope(Tensor& x, int64_t n_heads, int64_t head_dim, const Tensor& cos,
                       const Tensor& sin, const Tensor& positions) {
  expect(x, DType::F32, 2, "rope", "x");
  expect(cos, DType::F32, 2, "rope", "cos");
  expect(sin, DType::F32, 2, "rope", "sin");
  expect(positions, DType::I32, 1, "rope", "positions");
  QS_ASSERT(n_heads > 0 && head_dim > 0 && head_dim % 2 == 0 && x.dim(1) == n_heads * head_dim,
            "rope: x ", shape_str(x.shape()), " is not ", n_heads, " heads of an even head_dim ",
            head_dim);
  QS_ASSERT(cos.shape() == sin.shape() && cos.dim(1) == head_dim / 2, "rope: cos ",
            shape_str(cos.shape()), " and sin ", shape_str(sin.shape()),
            " should both be [positions, ", head_dim / 2, "]");
  QS_ASSERT(positions.dim(0) == x.dim(0), "rope: positions ", shape_str(positions.shape()),
            " for x ", shape_str(x.shape()));
  // Bounds are checked on the host, before x is touched, as the CPU backend does: the
  // table index is untrusted and a kernel cannot throw. One small copy and sync per call.
  const Tensor pos = download(positions);
  const int32_t* p = pos.data<int32_t>();
  for (int64_t t = 0; t < x.dim(0); ++t)
    if (p[t] < 0 || p[t] >= cos.dim(0))
      fail("rope: position ", p[t], " of token ", t, " is outside the cos/sin tables of ",
           cos.dim(0), " positions");
  cuda::rope(x.data<float>(), x.dim(0), n_heads, head_dim, cos.data<float>(), sin.data<float>(),
             positions.data<int32_t>(), ctx_->stream());
}

void CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v,
                            const AttentionShape& s, float scale, Tensor& out) {
  backend_checks::check_attention(q, k, v, s, out, Device::Cuda);
  if (s.head_dim > cuda::kAttentionMaxHeadDim)
    fail("attention: head_dim ", s.head_dim, " is larger than the CUDA kernel's ",
         cuda::kAttentionMaxHeadDim, "; use --device cpu for this model");
  QS_ASSERT(s.n_heads <= 65535 && s.batch <= 65535 && s.seqlen <= (int64_t(1) << 32),
            "attention: grid too large for batch ", s.batch, " heads ", s.n_heads, " seqlen ",
            s.seqlen);
  cuda::attention(q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(), s.batch,
                  s.seqlen, s.n_heads, s.n_kv_heads, s.head_dim, scale, ctx_->stream());
}

void CudaBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  expect(gate, DType::F32, gate.ndim(), "silu_mul", "gate");
  expect(up, DType::F32, gate.ndim(), "silu_mul", "up");
  expect(out, DType::F32, gate.ndim(), "silu_mul", "out");
  QS_ASSERT(up.shape() == gate.shape() && out.shape() == gate.shape(), "silu_mul: gate ",
            shape_str(gate.shape()), ", up ", shape_str(up.shape()), ", out ",
            shape_str(out.shape()));
  cuda::silu_mul(gate.data<float>(), up.data<float>(), out.data<float>(), gate.numel(),
                 ctx_->stream());
}

void CudaBackend::add_inplace(Tensor& x, const Tensor& y) {
  expect(x, DType::F32, x.ndim(), "add_inplace", "x");
  expect(y, DType::F32, x.ndim(), "add_inplace", "y");
  QS_ASSERT(x.shape() == y.shape(), "add_inplace: x ", shape_str(x.shape()), " += y ",
            shape_str(y.shape()));
  cuda::add_inplace(x.data<float>(), y.data<float>(), x.numel(), ctx_->stream());
}

void CudaBackend::embedding(const Tensor& table, const Tensor& tokens, Tensor& out) {
  QS_ASSERT(table.defined() && table.device() == Device::Host && table.ndim() == 2 &&
                dtype_is_float(table.dtype()),
            "embedding: table ", dtype_name(table.dtype()), " ", shape_str(table.shape()),
            " should be a host float [vocab, hidden] tensor");
  QS_ASSERT(tokens.defined() && tokens.device() == Device::Host && tokens.dtype() == DType::I32 &&
                tokens.ndim() == 1,
            "embedding: tokens should be a host I32 vector");
  expect(out, DType::F32, 2, "embedding", "out");
  const int64_t vocab = table.dim(0), dim = table.dim(1), n = tokens.dim(0);
  QS_ASSERT(out.dim(0) == n && out.dim(1) == dim, "embedding: out ", shape_str(out.shape()),
            " for ", n, " tokens of table ", shape_str(table.shape()));
  const int32_t* ids = tokens.data<int32_t>();
  for (int64_t t = 0; t < n; ++t)
    if (ids[t] < 0 || ids[t] >= vocab)
      fail_input("embedding: token id ", ids[t], " at position ", t,
                 " is outside the vocabulary of ", vocab, " tokens");
  if (n == 0 || dim == 0) return;
  // Gather the rows on the host in the table's own dtype (half the bytes of fp32 for a
  // bf16 checkpoint), copy, widen on the device. Chunked to bound the staging buffer.
  cuda::SrcType src = cuda::SrcType::F32;
  const bool direct = device_convertible(table.dtype(), src);
  const DType stage_type = direct ? table.dtype() : DType::F32;
  const size_t elem = dtype_size(table.dtype());
  const size_t row_bytes = size_t(dim) * elem;
  const int64_t chunk = std::max<int64_t>(1, (int64_t(64) << 20) / int64_t(dim * 4));
  const auto* rows = static_cast<const char*>(table.raw());
  const cudaStream_t s = ctx_->stream();
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t m = std::min(chunk, n - t0);
    Tensor host = Tensor::zeros(stage_type, {m, dim});
    for (int64_t t = 0; t < m; ++t) {
      const char* row = rows + size_t(ids[t0 + t]) * row_bytes;
      if (direct)
        std::memcpy(static_cast<char*>(host.raw()) + size_t(t) * row_bytes, row, row_bytes);
      else
        convert_to_f32(table.dtype(), row, host.data<float>() + t * dim, size_t(dim));
    }
    float* dst = out.data<float>() + t0 * dim;
    if (stage_type == DType::F32) {
      QS_CUDA_CHECK(cudaMemcpyAsync(dst, host.raw(), host.nbytes(), cudaMemcpyHostToDevice, s));
    } else {
      Tensor raw = ctx_->empty(stage_type, {m, dim});
      QS_CUDA_CHECK(cudaMemcpyAsync(raw.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, s));
      cuda::convert_to_f32(src, raw.raw(), dst, m * dim, s);
    }
  }
}

void CudaBackend::log_softmax(const Tensor& x, Tensor& y) {
  expect(x, DType::F32, 2, "log_softmax", "x");
  expect(y, DType::F32, 2, "log_softmax", "y");
  QS_ASSERT(x.shape() == y.shape(), "log_softmax: x ", shape_str(x.shape()), " into y ",
            shape_str(y.shape()));
  QS_ASSERT(y.raw() == x.raw() || !overlaps(y, x), "log_softmax: y partially overlaps x");
  cuda::log_softmax(x.data<float>(), y.data<float>(), x.dim(0), x.dim(1), ctx_->stream());
}

std::unique_ptr<Backend> make_cuda_backend(const std::string& device) {
  CudaBackendOptions o;
  if (device.rfind("cuda:", 0) == 0) {
    const std::string idx = device.substr(5);
    char* end = nullptr;
    const long v = std::strtol(idx.c_str(), &end, 10);
    if (idx.empty() || *end != '\0' || v < 0 || v > 1024)
      fail_input("--device ", device, ": expected cuda or cuda:N with N a device index");
    o.device = int(v);
  } else if (device != "cuda") {
    fail_input("--device ", device, ": expected cpu, cuda or cuda:N");
  }
  if (const char* m = std::getenv("QSHARD_CUDA_MATH"); m && *m) o.math = parse_cuda_math(m);
  return std::make_unique<CudaBackend>(o);
}

CudaBackend* as_cuda_backend(Backend& backend) { return dynamic_cast<CudaBackend*>(&backend); }

}  // namespace qshard
