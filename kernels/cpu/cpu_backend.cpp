// The CPU reference backend: "backend memory" is host memory, and every op checks its
// Tensors here before handing raw pointers to the kernels in cpu_kernels.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "kernels/backend_checks.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace qshard {

namespace {

// cblas takes int dimensions and leading dimensions.
constexpr int64_t kBlasMax = std::numeric_limits<int>::max();

void expect(const Tensor& t, DType dtype, int ndim, const char* op, const char* arg) {
  backend_checks::expect(t, Device::Host, dtype, ndim, op, arg);
}
using backend_checks::overlaps;

// Big float conversions (an upload of a bf16 weight) are spread over the cores.
void convert_parallel(DType src, const void* data, float* out, int64_t n) {
  constexpr int64_t kChunk = int64_t(1) << 18;
  const auto* bytes = static_cast<const char*>(data);
  const size_t elem = dtype_size(src);
#pragma omp parallel for schedule(static) if (n > kChunk)
  for (int64_t c = 0; c < n; c += kChunk)
    convert_to_f32(src, bytes + size_t(c) * elem, out + c, size_t(std::min(kChunk, n - c)));
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }

  Tensor zeros(DType dtype, Shape shape) override { return Tensor::zeros(dtype, std::move(shape)); }

  Tensor upload(const Tensor& host) override {
    QS_ASSERT(host.defined() && host.device() == Device::Host,
              "upload: source is not a host tensor");
    if (host.dtype() == DType::I32) {
      Tensor t = Tensor::zeros(DType::I32, host.shape());
      std::memcpy(t.raw(), host.raw(), host.nbytes());
      return t;
    }
    QS_ASSERT(dtype_is_float(host.dtype()), "upload: ", dtype_name(host.dtype()), " ",
              shape_str(host.shape()), " is neither a float dtype nor I32");
    Tensor t = Tensor::zeros(DType::F32, host.shape());
    convert_parallel(host.dtype(), host.raw(), t.data<float>(), host.numel());
    return t;
  }

  Tensor download(const Tensor& t) override {
    QS_ASSERT(t.defined() && t.device() == Device::Host, "download: not a cpu-backend tensor");
    Tensor host = Tensor::zeros(t.dtype(), t.shape());
    std::memcpy(host.raw(), t.raw(), t.nbytes());
    return host;
  }

  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    expect(x, DType::F32, 2, "linear", "x");
    expect(w, DType::F32, 2, "linear", "w");
    expect(y, DType::F32, 2, "linear", "y");
    const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
    QS_ASSERT(w.dim(1) == k && y.dim(0) == m && y.dim(1) == n, "linear: x ",
              shape_str(x.shape()), " · w ", shape_str(w.shape()), "^T into y ",
              shape_str(y.shape()));
    if (bias) {
      expect(*bias, DType::F32, 1, "linear", "bias");
      QS_ASSERT(bias->dim(0) == n, "linear: bias ", shape_str(bias->shape()), " for w ",
                shape_str(w.shape()));
    }
    QS_ASSERT(!overlaps(y, x) && !overlaps(y, w), "linear: y overlaps an input");
    QS_ASSERT(std::max({m, n, k}) <= kBlasMax, "linear: x ", shape_str(x.shape()), " w ",
              shape_str(w.shape()), " exceeds BLAS's int dimensions");
    cpu::linear(x.data<float>(), w.data<float>(), bias ? bias->data<float>() : nullptr,
                y.data<float>(), m, n, k);
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override {
    expect(x, DType::F32, 2, "rmsnorm", "x");
    expect(weight, DType::F32, 1, "rmsnorm", "weight");
    expect(y, DType::F32, 2, "rmsnorm", "y");
    QS_ASSERT(y.shape() == x.shape() && weight.dim(0) == x.dim(1), "rmsnorm: x ",
              shape_str(x.shape()), ", weight ", shape_str(weight.shape()), ", y ",
              shape_str(y.shape()));
    QS_ASSERT(y.raw() == x.raw() || !overlaps(y, x), "rmsnorm: y partially overlaps x");
    cpu::rmsnorm(x.data<float>(), weight.data<float>(), eps, y.data<float>(), x.dim(0),
                 x.dim(1));
  }

  void rope(Tensor& x, int64_t n_heads, int64_t head_dim, const Tensor& cos, const Tensor& sin,
            const Tensor& positions) override {
    expect(x, DType::F32, 2, "rope", "x");
    expect(cos, DType::F32, 2, "rope", "cos");
    expect(sin, DType::F32, 2, "rope", "sin");
    expect(positions, DType::I32, 1, "rope", "positions");
    QS_ASSERT(n_heads > 0 && head_dim > 0 && head_dim % 2 == 0 &&
                  x.dim(1) == n_heads * head_dim,
              "rope: x ", shape_str(x.shape()), " is not ", n_heads, " heads of an even head_dim ",
              head_dim);
    QS_ASSERT(cos.shape() == sin.shape() && cos.dim(1) == head_dim / 2, "rope: cos ",
              shape_str(cos.shape()), " and sin ", shape_str(sin.shape()),
              " should both be [positions, ", head_dim / 2, "]");
    QS_ASSERT(positions.dim(0) == x.dim(0), "rope: positions ", shape_str(positions.shape()),
              " for x ", shape_str(x.shape()));
    const int32_t* pos = positions.data<int32_t>();
    for (int64_t t = 0; t < x.dim(0); ++t)
      if (pos[t] < 0 || pos[t] >= cos.dim(0))
        fail("rope: position ", pos[t], " of token ", t, " is outside the cos/sin tables of ",
             cos.dim(0), " positions");
    cpu::rope(x.data<float>(), x.dim(0), n_heads, head_dim, cos.data<float>(),
              sin.data<float>(), pos);
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& s,
                 float scale, Tensor& out) override {
    backend_checks::check_attention(q, k, v, s, out, Device::Host);
    QS_ASSERT(s.seqlen <= kBlasMax && q.dim(1) <= kBlasMax, "attention: seqlen ", s.seqlen,
              " or row ", q.dim(1), " exceeds BLAS's int dimensions");
    cpu::attention(q.data<float>(), k.data<float>(), v.data<float>(), s, scale,
                   out.data<float>());
  }

  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    expect(gate, DType::F32, gate.ndim(), "silu_mul", "gate");
    expect(up, DType::F32, gate.ndim(), "silu_mul", "up");
    expect(out, DType::F32, gate.ndim(), "silu_mul", "out");
    QS_ASSERT(up.shape() == gate.shape() && out.shape() == gate.shape(), "silu_mul: gate ",
              shape_str(gate.shape()), ", up ", shape_str(up.shape()), ", out ",
              shape_str(out.shape()));
    cpu::silu_mul(gate.data<float>(), up.data<float>(), out.data<float>(), gate.numel());
  }

  void add_inplace(Tensor& x, const Tensor& y) override {
    expect(x, DType::F32, x.ndim(), "add_inplace", "x");
    expect(y, DType::F32, x.ndim(), "add_inplace", "y");
    QS_ASSERT(x.shape() == y.shape(), "add_inplace: x ", shape_str(x.shape()), " += y ",
              shape_str(y.shape()));
    cpu::add_inplace(x.data<float>(), y.data<float>(), x.numel());
  }

  void embedding(const Tensor& table, const Tensor& tokens, Tensor& out) override {
    QS_ASSERT(table.defined() && table.device() == Device::Host && table.ndim() == 2 &&
                  dtype_is_float(table.dtype()),
              "embedding: table ", dtype_name(table.dtype()), " ", shape_str(table.shape()),
              " should be a host float [vocab, hidden] tensor");
    expect(tokens, DType::I32, 1, "embedding", "tokens");
    expect(out, DType::F32, 2, "embedding", "out");
    const int64_t vocab = table.dim(0), dim = table.dim(1), n = tokens.dim(0);
    QS_ASSERT(out.dim(0) == n && out.dim(1) == dim, "embedding: out ", shape_str(out.shape()),
              " for ", n, " tokens of table ", shape_str(table.shape()));
    const int32_t* ids = tokens.data<int32_t>();
    // Checked up front: an exception cannot leave the parallel gather below.
    for (int64_t t = 0; t < n; ++t)
      if (ids[t] < 0 || ids[t] >= vocab)
        fail_input("embedding: token id ", ids[t], " at position ", t,
                   " is outside the vocabulary of ", vocab, " tokens");
    const auto* rows = static_cast<const char*>(table.raw());
    const size_t row_bytes = size_t(dim) * dtype_size(table.dtype());
    float* o = out.data<float>();
#pragma omp parallel for schedule(static) if (n * dim >= (int64_t(1) << 16))
    for (int64_t t = 0; t < n; ++t)
      convert_to_f32(table.dtype(), rows + size_t(ids[t]) * row_bytes, o + t * dim, size_t(dim));
  }

  void log_softmax(const Tensor& x, Tensor& y) override {
    expect(x, DType::F32, 2, "log_softmax", "x");
    expect(y, DType::F32, 2, "log_softmax", "y");
    QS_ASSERT(x.shape() == y.shape(), "log_softmax: x ", shape_str(x.shape()), " into y ",
              shape_str(y.shape()));
    QS_ASSERT(y.raw() == x.raw() || !overlaps(y, x), "log_softmax: y partially overlaps x");
    cpu::log_softmax(x.data<float>(), y.data<float>(), x.dim(0), x.dim(1));
  }

  void fake_quant_activations(const Tensor& x, ActFormat f, Tensor& y) override {
    expect(x, DType::F32, 2, "fake_quant_activations", "x");
    expect(y, DType::F32, 2, "fake_quant_activations", "y");
    QS_ASSERT(x.shape() == y.shape(), "fake_quant_activations: x ", shape_str(x.shape()),
              " into y ", shape_str(y.shape()));
    QS_ASSERT(y.raw() == x.raw() || !overlaps(y, x),
              "fake_quant_activations: y partially overlaps x");
    cpu::fake_quant_activations(x.data<float>(), y.data<float>(), x.dim(0), x.dim(1), f);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace qshard
