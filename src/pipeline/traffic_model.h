// What one decoder layer puts through the Communicator, by kind, written from the same
// rules the pipeline's collectives follow (hessian_sum.h, layer_owner.h, row_parallel.h):
// the payload the Communicator counts, plus the bytes each rank sends or receives on the
// wire if MPI/NCCL use the textbook algorithms (ring allreduce 2(N−1)/N · payload,
// pipelined broadcast ≈ payload into every non-root rank, ring allgather (N−1)/N ·
// payload). Checked against the counters of a real run by bench/bench_dist.py.
#pragma once

#include <cstdint>

#include "model/model_spec.h"
#include "quant/format.h"

namespace qshard {

struct LayerTrafficModel {
  uint64_t statistics = 0;  // Hessian allreduces (fp64 upper triangles), one per linear group (MoE: per expert)
  uint64_t weights = 0;     // the layer's tensors as stored (weight_dtype_bytes), 64-byte aligned
  uint64_t results = 0;     // allgathered codes, scales, zero points, broadcast g_idx
  // Estimated wire bytes per rank at N ranks.
  double wire_statistics(int n) const { return n > 1 ? 2.0 * (n - 1) / n * double(statistics) : 0; }
  double wire_weights(int n) const { return n > 1 ? double(weights) : 0; }
  double wire_results(int n) const { return n > 1 ? double(n - 1) / n * double(results) : 0; }
};

// Every linear of a layer (model/architecture.h) in `format`, GPTQ/RTN row-parallel at
// more than one rank.
LayerTrafficModel layer_traffic_model(const ModelSpec& spec, const QuantFormat& format,
                                      int weight_dtype_bytes = 2);

}  // namespace qshard
