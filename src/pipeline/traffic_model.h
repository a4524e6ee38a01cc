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
  // Hessian allreduces (fp64 upper triangles), one per linear group; an MoE layer's routed
  // experts have none: their owners build them from the routed rows below.
  uint64_t statistics = 0;
  // MoE: every calibration token's rows to the owners of the experts it is routed to
  // (fp32, hidden wide, top-k per token; an alltoallv the Communicator counts as statistics,
  // as the bytes each rank receives; pipeline/moe_experts.h). 0 for dense layers.
  uint64_t routed = 0;
  uint64_t weights = 0;     // the layer's broadcast tensors as stored (weight_dtype_bytes), 64-byte
                            // aligned; an MoE layer's routed experts are read by their owners
  uint64_t stored = 0;      // every tensor of the layer as stored: what one rank alone reads
  uint64_t results = 0;     // allgathered codes, scales, zero points, broadcast g_idx
  // Estimated wire bytes per rank at N ranks.
  double wire_statistics(int n) const { return n > 1 ? 2.0 * (n - 1) / n * double(statistics) : 0; }
  double wire_weights(int n) const { return n > 1 ? double(weights) : 0; }
  double wire_results(int n) const { return n > 1 ? double(n - 1) / n * double(results) : 0; }
  // A rank's 1/N of the tokens, of whose rows (N−1)/N go to other ranks' experts (uniform routing).
  double wire_routed(int n) const { return n > 1 ? double(n - 1) / n / n * double(routed) : 0; }
};

// Every linear of a layer (model/architecture.h) in `format`, GPTQ/RTN row-parallel at
// more than one rank (an MoE layer's routed experts: each fitted whole by its owner, the
// results allgathered); calib_tokens: calibration tokens over all ranks (the routed rows).
LayerTrafficModel layer_traffic_model(const ModelSpec& spec, const QuantFormat& format,
                                      int weight_dtype_bytes = 2, int64_t calib_tokens = 0);

}  // namespace qshard
