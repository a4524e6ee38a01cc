#include "pipeline/traffic_model.h"

#include "model/architecture.h"
#include "pipeline/row_parallel.h"

namespace qshard {

// Over the architecture table's rows, so a family's tensors and groups (an MoE layer's
// experts included) are counted as the pipeline moves them.
LayerTrafficModel layer_traffic_model(const ModelSpec& s, const QuantFormat& format, int weight_dtype_bytes,
                                      int64_t calib_tokens) {
  LayerTrafficModel m;
  auto tri = [](int64_t d) { return uint64_t(d) * uint64_t(d + 1) / 2 * 8; };  // HessianSum
  auto aligned = [&](int64_t numel) { return (uint64_t(numel) * weight_dtype_bytes + 63) / 64 * 64; };
  for (const GroupSlot& g : layer_groups(s))
    if (g.expert == kNoExpert || g.expert == kSharedExpert) m.statistics += tri(group_in_features(s, g));
  if (architecture(s.arch).is_moe())
    m.routed = uint64_t(calib_tokens) * uint64_t(s.experts_per_token) * uint64_t(s.hidden_size) * 4;
  for (const NormSlot& n : architecture(s.arch).norms) m.weights += aligned(dim_size(s, n.size));
  for (const DenseLinearSlot& d : dense_linears(s)) m.weights += aligned(dim_size(s, d.out) * dim_size(s, d.in));
  m.stored = m.weights;  // and the Linears' below
  for (const LinearSlot& l : layer_linears(s)) {
    const int64_t out = dim_size(s, l.out), in = dim_size(s, l.in);
    // A routed expert is read by its owner alone, never broadcast (LayerFetcher::read_privately).
    const uint64_t bytes = aligned(out * in) + (has_bias(s, l) ? aligned(out) : 0);
    m.stored += bytes;
    if (l.expert == kNoExpert || l.expert == kSharedExpert) m.weights += bytes;
    m.results += row_results_bytes(out, in, format);
  }
  return m;
}

}  // namespace qshard
