#include "pipeline/traffic_model.h"

#include "pipeline/row_parallel.h"

namespace qshard {

LayerTrafficModel layer_traffic_model(const ModelSpec& s, const QuantFormat& format, int weight_dtype_bytes) {
  LayerTrafficModel m;
  auto tri = [](int64_t d) { return uint64_t(d) * uint64_t(d + 1) / 2 * 8; };  // HessianSum
  m.statistics = tri(s.hidden_size) + tri(s.q_dim()) + tri(s.hidden_size) + tri(s.intermediate_size);
  auto aligned = [&](int64_t numel) { return (uint64_t(numel) * weight_dtype_bytes + 63) / 64 * 64; };
  struct Lin {
    int64_t out, in;
    bool bias;
  };
  const Lin lins[] = {{s.q_dim(), s.hidden_size, s.qkv_bias},       {s.kv_dim(), s.hidden_size, s.qkv_bias},
                      {s.kv_dim(), s.hidden_size, s.qkv_bias},      {s.hidden_size, s.q_dim(), s.o_bias},
                      {s.intermediate_size, s.hidden_size, s.mlp_bias}, {s.intermediate_size, s.hidden_size, s.mlp_bias},
                      {s.hidden_size, s.intermediate_size, s.mlp_bias}};
  m.weights = 2 * aligned(s.hidden_size);  // the two norms
  for (const Lin& l : lins) {
    m.weights += aligned(l.out * l.in) + (l.bias ? aligned(l.out) : 0);
    m.results += row_results_bytes(l.out, l.in, format);
  }
  return m;
}

}  // namespace qshard
