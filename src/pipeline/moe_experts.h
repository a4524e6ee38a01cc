// Routed experts owned by ranks (issue 17, item 4). Each routed expert of an MoE layer
// has one owner rank (contiguous ranges of experts, rank 0 the first), which alone
// calibrates and fits it. Per layer, every rank captures its windows' MLP inputs and
// routing in one forward that stops before any expert runs (RoutedCapture); the rows
// routed to each expert then travel once to its owner (exchange_routed_rows, one
// alltoallv), in calibration-window order. The owner so holds exactly the rows one rank
// alone would hold, and builds gate/up's Hessian from them (a Gram matrix per window,
// HessianSum::add_window), fits gate and up, runs the expert with its quantized gate/up on
// the same rows (one GEMM over all of them) for down's Hessian, and fits down. Nothing it
// computes depends on the rank count, so neither do the bytes. The fitted experts are
// allgathered (serialize_fitted) so that every rank has the whole layer for the forward
// that feeds the next one and makes the same exporter calls.
// Instead of one fp64 Hessian allreduce per expert and group (d² per expert), the wire
// carries each routed row once: tokens × top-k × hidden × 4 bytes per layer.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "dist/communicator.h"
#include "dist/partition.h"
#include "model/moe.h"
#include "pipeline/report.h"
#include "quant/quantized.h"

namespace qshard {

class ExpertOwnership {
 public:
  ExpertOwnership(int64_t experts, int ranks) : experts_(experts), ranks_(ranks) {}
  Range experts_of(int rank) const { return split_range(experts_, ranks_, rank); }
  int owner(int64_t expert) const;

 private:
  int64_t experts_;
  int ranks_;
};

// The routed expert a checkpoint tensor belongs to ("...layers.3.mlp.experts.5.up_proj.weight"
// → 5), or -1 (a shared expert is not a routed one): its owner writes it.
int64_t routed_expert_of(const std::string& tensor);

// This rank's MLP inputs and routing, over the batches of one layer forward (filled by
// the pipeline's observer from LayerObserver::on_moe_input, batches in window order).
struct RoutedCapture {
  int64_t hidden = 0;
  std::vector<float> x;                    // [tokens, hidden], this rank's tokens in order
  std::vector<std::vector<int64_t>> rows;  // per expert: its routed tokens, ascending
  void add(const Tensor& x_batch, const Routing& r);
  int64_t tokens() const { return hidden ? int64_t(x.size()) / hidden : 0; }
};

// The rows an owner holds for one of its experts: every rank's, in window order.
struct ExpertRows {
  Tensor x;                          // host F32 [rows, hidden]
  std::vector<int64_t> window_rows;  // rows per calibration window, every window in order
};

// Collective: each owned expert's rows from every rank. windows: calibration windows over
// all ranks, split as split_range(windows, ranks, rank); window_tokens: tokens per window.
// all_tokens[e]: expert e gets every token's row, not only its routed ones
// (--moe-starved all-tokens for a starved expert).
std::map<int, ExpertRows> exchange_routed_rows(const RoutedCapture& cap, const ExpertOwnership& owners,
                                               const std::vector<bool>& all_tokens, int64_t windows,
                                               int64_t window_tokens, Communicator& comm);

// One fitted Linear as it travels from its expert's owner to every rank.
struct FittedLinear {
  std::string module;
  bool skipped = false;  // the recipe leaves it unquantized: exported as stored
  QuantizedLinear q;
  ModuleReport report;
};
std::vector<uint8_t> serialize_fitted(const std::vector<FittedLinear>& fitted);
std::vector<FittedLinear> deserialize_fitted(const std::vector<uint8_t>& bytes);

}  // namespace qshard
