// Quantizing one Linear with its output rows split over ranks. GPTQ (and RTN) rows are
// independent given the Hessian: every rank holds the same summed H, so the act-order
// permutation and g_idx (from diag H) and static groups (from each row's own weights)
// come out the same as on one rank. The only tensor-wide quantity, NVFP4's fp32 tensor
// scale, is computed first from the global amax (an allreduce max). Each rank quantizes
// its rows [row_range(out, N, rank)], then the rows are allgathered so every rank has
// the whole QuantizedLinear for the forward that feeds the next group.
#pragma once

#include <functional>

#include "core/tensor.h"
#include "dist/communicator.h"
#include "dist/partition.h"
#include "quant/quantized.h"
#include "quant/scheme.h"

namespace qshard {

// The output rows [begin, end) that `rank` of `ranks` quantizes: whole blocks of 16 rows
// (GPTQ's row tile), so every rank count gives the same bits (row_parallel.cpp says why).
Range row_range(int64_t out, int ranks, int rank);

struct RowQuantized {
  QuantizedLinear q;
  double loss = 0;
  int escalations = 0;
  // GPTQ's damping (GptqResult::damp_abs): the error report then comes from loss
  // (quant/gptq_error.h). Negative for other methods: ΔW is multiplied by H.
  double damp_abs = -1;
};

// Quantizes some rows of a weight with the given scheme (its tensor_scale() is the
// global one); the method (GPTQ, RTN, ...) is the caller's.
using RowQuantizer = std::function<RowQuantized(const Tensor& rows, const Scheme& scheme)>;

struct RowParallelResult {
  QuantizedLinear q;       // every row, on every rank
  double loss = 0;         // summed over ranks
  int escalations = 0;     // max over ranks
  double rel_error = 0;    // tr(ΔW H ΔWᵀ) / tr(W H Wᵀ), terms summed over ranks' rows
  Tensor w_hat;            // q.dequantize(), host F32 [out, in]
};

// weight: host F32 [out, in] (every rank passes the same); hessian: host F32 [in, in]
// or null (no rel_error then).
RowParallelResult quantize_rows_parallel(const Tensor& weight, const Tensor* hessian,
                                         const QuantFormat& format, const RowQuantizer& quantize,
                                         Communicator& comm);

// Bytes one module's results put on the wire in the allgather (codes u8, two to a byte
// for formats of at most 4 bits, scales f32,
// zeros f32 for asymmetric-capable Int, GGML 256-blocks' d and dmin f32, g_idx broadcast): the accounting formula the
// benchmark's analytic 70B numbers use too.
uint64_t row_results_bytes(int64_t out, int64_t in, const QuantFormat& format);

}  // namespace qshard
