#include "pipeline/row_parallel.h"

#include <cblas.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/phase_timer.h"
#include "dist/partition.h"
#include "quant/gptq_error.h"

namespace qshard {

namespace {

// Rows go to ranks in whole blocks of GPTQ's row tile (16), so each tile, and each
// trailing-update GEMM over it, is the same call at every rank count: BLAS rounds a row
// differently depending on where it falls in the GEMM's M (OpenBLAS 0.3.21 here), which
// at an odd rank count changed a few codes in layer 0 and then most of the later layers'.
constexpr int64_t kRowBlock = 16;

// A scheme whose tensor scale is fixed (the global one) and otherwise the wrapped row.
class FixedTensorScale final : public Scheme {
 public:
  FixedTensorScale(const Scheme& inner, float ts) : inner_(inner), ts_(ts) {}
  const QuantFormat& format() const override { return inner_.format(); }
  float tensor_scale(const float* w, int64_t n) const override {
    inner_.tensor_scale(w, n);  // keeps the non-finite check
    return ts_;
  }
  GroupParams fit(const float* x, int64_t n, int64_t stride, float shrink, float ts) const override {
    return inner_.fit(x, n, stride, shrink, ts);
  }
  uint8_t quantize(float x, const GroupParams& p, float ts) const override { return inner_.quantize(x, p, ts); }
  float dequantize(uint8_t code, const GroupParams& p, float ts) const override {
    return inner_.dequantize(code, p, ts);
  }

 private:
  const Scheme& inner_;
  float ts_;
};

// Σ (a H) ∘ a = tr(a H aᵀ) over a's rows, in chunks of rows so that the product
// buffer stays small (a whole 70B gate_proj would need another 0.9 GB).
double quad(const float* a, int64_t rows, int64_t in, const float* h) {
  constexpr int64_t kChunk = 256;
  std::vector<float> prod(size_t(std::min(rows, kChunk) * in));
  double s = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t n = std::min(kChunk, rows - r0);
    const float* ar = a + r0 * in;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(in), int(in), 1.0f, ar, int(in), h,
                int(in), 0.0f, prod.data(), int(in));
    for (int64_t i = 0; i < n * in; ++i) s += double(prod[size_t(i)]) * ar[i];
  }
  return s;
}

// Codes of formats of at most 4 bits travel two to a byte (low nibble first): half the
// results allgather. Every code of such a format is below 16.
bool packs_codes(const QuantFormat& f) { return f.bits <= 4; }

std::vector<uint8_t> pack_nibbles(const uint8_t* codes, int64_t n) {
  std::vector<uint8_t> p(size_t((n + 1) / 2), 0);
  for (int64_t i = 0; i < n; ++i) {
    QS_ASSERT(codes[i] < 16, "code ", int(codes[i]), " of a <= 4-bit format");
    p[size_t(i / 2)] |= uint8_t(codes[i] << (4 * (i % 2)));
  }
  return p;
}

void unpack_nibbles(const uint8_t* packed, int64_t n, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) codes[i] = uint8_t((packed[i / 2] >> (4 * (i % 2))) & 0xF);
}

// Every rank's codes gathered into q_codes (row blocks in rank order), packed on the wire
// when the format allows.
void allgather_codes(const std::vector<uint8_t>& mine, std::vector<uint8_t>& q_codes, int64_t out, int64_t in,
                     const QuantFormat& format, Communicator& comm) {
  const int n = comm.size();
  std::vector<int64_t> bytes;
  for (int k = 0; k < n; ++k) {
    const int64_t c = row_range(out, n, k).size() * in;
    bytes.push_back(packs_codes(format) ? (c + 1) / 2 : c);
  }
  if (!packs_codes(format)) {
    comm.allgatherv(mine.data(), q_codes.data(), bytes, Traffic::Results);
    return;
  }
  const std::vector<uint8_t> packed = pack_nibbles(mine.data(), int64_t(mine.size()));
  int64_t total = 0;
  for (int64_t b : bytes) total += b;
  std::vector<uint8_t> all(static_cast<size_t>(total));
  comm.allgatherv(packed.data(), all.data(), bytes, Traffic::Results);
  int64_t at = 0;
  for (int k = 0; k < n; ++k) {
    const Range r = row_range(out, n, k);
    unpack_nibbles(all.data() + at, r.size() * in, q_codes.data() + r.begin * in);
    at += bytes[size_t(k)];
  }
}

}  // namespace

Range row_range(int64_t out, int ranks, int rank) {
  return split_range_aligned(out, ranks, rank, kRowBlock);
}

uint64_t row_results_bytes(int64_t out, int64_t in, const QuantFormat& format) {
  const int64_t ng = format.n_groups(in);
  const bool zeros = format.stores_zeros();
  const uint64_t codes = packs_codes(format) ? uint64_t(out * in) / 2 : uint64_t(out * in);  // in is even
  const uint64_t super = format.ggml_block() == 256 ? uint64_t(out * (in / 256) * 2) * 4 : 0;  // d, dmin
  return codes + uint64_t(out * ng) * 4 * (zeros ? 2 : 1) + super + uint64_t(in) * 4;
}

RowParallelResult quantize_rows_parallel(const Tensor& weight, const Tensor* hessian,
                                         const QuantFormat& format, const RowQuantizer& quantize,
                                         Communicator& comm) {
  QS_ASSERT(weight.device() == Device::Host && weight.dtype() == DType::F32 && weight.ndim() == 2,
            "quantize_rows_parallel needs a host F32 matrix");
  const int64_t out = weight.dim(0), in = weight.dim(1);
  const int n = comm.size();
  const Range mine = row_range(out, n, comm.rank());
  const auto scheme = Scheme::make(format);

  // The tensor-wide scale from the global amax: exactly what one rank computes from the
  // whole weight, since amax is a max and the scheme's formula sees only it.
  float amax = 0.0f;
  const float* w = weight.data<float>();
  for (int64_t i = mine.begin * in; i < mine.end * in; ++i)
    if (std::isfinite(w[i])) amax = std::max(amax, std::fabs(w[i]));
  double g = amax;
  if (n > 1) comm.allreduce_max(&g, 1);
  const float gmax = float(g);
  const FixedTensorScale fixed(*scheme, scheme->tensor_scale(&gmax, 1));

  RowQuantized local;
  // Always the fixed scale, also alone: a caller may quantize its rows in chunks.
  if (mine.size() > 0) {
    PhaseTimer timer(Phase::Fit);
    local = quantize(weight.rows(mine.begin, mine.end), fixed);
  }

  RowParallelResult r;
  QuantizedLinear& q = r.q;
  const int64_t ng = format.n_groups(in);
  PhaseTimer comm_timer(Phase::Allreduce);  // the results allgather
  if (n == 1) {
    q = std::move(local.q);
  } else {
    q.format = format;
    q.out_features = out;
    q.in_features = in;
    q.tensor_scale = fixed.tensor_scale(&gmax, 1);
    // Int rows carry zero points (symmetric ones too, GPTQ's convention), GGML _1 rows
    // their minima; MX/NV none.
    const bool has_zeros = format.stores_zeros();
    if (mine.size() > 0) {
      QS_ASSERT(local.q.out_features == mine.size() && local.q.in_features == in, "row block shape");
      QS_ASSERT(int64_t(local.q.scales.size()) == mine.size() * ng, "row block scales");
      QS_ASSERT(!has_zeros || int64_t(local.q.zeros.size()) == mine.size() * ng, "row block zeros");
    }
    std::vector<int64_t> scale_bytes;
    for (int k = 0; k < n; ++k) scale_bytes.push_back(row_range(out, n, k).size() * ng * int64_t(sizeof(float)));
    q.codes.resize(size_t(out * in));
    q.scales.resize(size_t(out * ng));
    allgather_codes(local.q.codes, q.codes, out, in, format, comm);
    comm.allgatherv(local.q.scales.data(), q.scales.data(), scale_bytes, Traffic::Results);
    if (has_zeros) {
      q.zeros.resize(size_t(out * ng));
      comm.allgatherv(local.q.zeros.data(), q.zeros.data(), scale_bytes, Traffic::Results);
    }
    // GGML 256-blocks (K-quants, IQ4_XS): each super-block's FP16 d and dmin, which the
    // GGUF export encodes the sub-block scale codes against.
    int64_t has_super = int64_t(!local.q.super_scales.empty());
    comm.allreduce_max(&has_super, 1);
    if (has_super) {
      const int64_t per_row = in / 256 * 2;
      QS_ASSERT(format.ggml_block() == 256 && int64_t(local.q.super_scales.size()) == mine.size() * per_row,
                "row block super-block scales");
      std::vector<int64_t> super_bytes;
      for (int k = 0; k < n; ++k) super_bytes.push_back(row_range(out, n, k).size() * per_row * int64_t(sizeof(float)));
      q.super_scales.resize(size_t(out * per_row));
      comm.allgatherv(local.q.super_scales.data(), q.super_scales.data(), super_bytes, Traffic::Results);
    }
    // g_idx depends on H alone, the same everywhere; rank 0 always has rows.
    q.g_idx.resize(size_t(in));
    if (comm.is_root()) q.g_idx = local.q.g_idx.empty() ? std::vector<int32_t>(size_t(in), 0) : local.q.g_idx;
    int64_t has_g = comm.is_root() ? int64_t(!local.q.g_idx.empty()) : 0;
    comm.allreduce_max(&has_g, 1);
    if (has_g) {
      comm.broadcast(q.g_idx.data(), in * int64_t(sizeof(int32_t)), 0, Traffic::Results);
    } else {
      q.g_idx.clear();
    }
  }

  // Quality terms over this rank's rows, summed.
  double terms[3] = {0, 0, local.loss};
  {
    PhaseTimer timer(Phase::Fit);
    r.w_hat = q.dequantize();
  }
  if (hessian && mine.size() > 0) {
    PhaseTimer timer(Phase::ErrorReport);
    const float* wh = r.w_hat.data<float>() + mine.begin * in;
    const float* wm = w + mine.begin * in;
    const float* hm = hessian->data<float>();
    if (local.damp_abs >= 0) {  // GPTQ: its own error terms, no product with H
      terms[0] = gptq_output_error(wm, wh, mine.size(), in, hm, in + 1, local.loss, local.damp_abs);
    } else {
      std::vector<float> delta(size_t(mine.size() * in));
      for (int64_t i = 0; i < mine.size() * in; ++i) delta[size_t(i)] = wm[i] - wh[i];
      terms[0] = quad(delta.data(), mine.size(), in, hm);
    }
    terms[1] = quad(wm, mine.size(), in, hm);
  }
  int64_t esc = local.escalations;
  if (n > 1) {
    comm.allreduce_sum(terms, 3);
    comm.allreduce_max(&esc, 1);
  }
  r.rel_error = terms[1] > 0 ? terms[0] / terms[1] : 0.0;
  r.loss = terms[2];
  r.escalations = int(esc);
  return r;
}

}  // namespace qshard
