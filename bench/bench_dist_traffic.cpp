// Bytes one decoder layer communicates, by kind, from pipeline/traffic_model.h (the
// rules the pipeline's collectives follow), for a config.json or Llama-3-70B geometry,
// at several rank counts. Prints a table; --json for one object per row.
//   build/bench/bench_dist_traffic [--config DIR/config.json | --geometry NAME] [--format int4]
//                                  [--group-size 128] [--ranks 2,8,64] [--calib-tokens N] [--json]
// NAME: llama-3-70b (default), mixtral-8x22b, qwen3-235b-a22b. MoE: the routed experts'
// rows travel to their owners (calib-tokens x top-k rows; default 128 x 2048 tokens)
// instead of their Hessians being allreduced.
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "io/json_file.h"
#include "model/model_spec.h"
#include "pipeline/traffic_model.h"

using namespace qshard;

int main(int argc, char** argv) {
  std::string config, geometry = "llama-3-70b", format = "int4";
  int64_t group = 128, calib_tokens = 128 * 2048;
  std::vector<int> ranks = {8, 64};
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--config") config = next();
    else if (a == "--geometry") geometry = next();
    else if (a == "--format") format = next();
    else if (a == "--group-size") group = std::stoll(next());
    else if (a == "--json") json = true;
    else if (a == "--calib-tokens") calib_tokens = std::stoll(next());
    else if (a == "--ranks") {
      ranks.clear();
      std::stringstream ss(next());
      for (std::string t; std::getline(ss, t, ',');) ranks.push_back(std::stoi(t));
    } else {
      std::fprintf(stderr, "usage: %s [--config config.json | --geometry llama-3-70b|mixtral-8x22b|qwen3-235b-a22b] "
                   "[--format int4] [--group-size 128] [--ranks 8,64] [--calib-tokens N] [--json]\n", argv[0]);
      return 2;
    }
  }
  ModelSpec s;
  std::string name = geometry;
  if (!config.empty()) {
    s = ModelSpec::from_json(read_json_file(config), config);
    name = config;
  } else if (geometry == "llama-3-70b") {  // hidden 8192, intermediate 28672, 64/8 heads of 128
    s.hidden_size = 8192, s.intermediate_size = 28672, s.num_layers = 80;
    s.n_heads = 64, s.n_kv_heads = 8, s.head_dim = 128, s.vocab_size = 128256;
  } else if (geometry == "mixtral-8x22b") {  // 8 experts of 16384, top-2, 48/8 heads of 128
    s.arch = Arch::Mixtral, s.hidden_size = 6144, s.intermediate_size = 16384, s.num_layers = 56;
    s.n_heads = 48, s.n_kv_heads = 8, s.head_dim = 128, s.vocab_size = 32768;
    s.num_experts = 8, s.experts_per_token = 2, s.moe_intermediate_size = 16384, s.norm_topk_prob = true;
  } else if (geometry == "qwen3-235b-a22b") {  // 128 experts of 1536, top-8, 64/4 heads of 128, q/k norm
    s.arch = Arch::Qwen3Moe, s.hidden_size = 4096, s.intermediate_size = 12288, s.num_layers = 94;
    s.n_heads = 64, s.n_kv_heads = 4, s.head_dim = 128, s.vocab_size = 151936;
    s.num_experts = 128, s.experts_per_token = 8, s.moe_intermediate_size = 1536, s.norm_topk_prob = true;
  } else {
    std::fprintf(stderr, "unknown --geometry %s (llama-3-70b, mixtral-8x22b, qwen3-235b-a22b)\n", geometry.c_str());
    return 2;
  }
  const QuantFormat f = QuantFormat::parse(format, group, true);
  const LayerTrafficModel m = layer_traffic_model(s, f, 2, calib_tokens);
  const double gb = 1e9;
  if (!json) {
    std::printf("# %s, %s; per decoder layer. payload = bytes the Communicator counts (any N > 1);\n", name.c_str(),
                f.describe().c_str());
    std::printf("# wire = estimated bytes each rank moves (ring allreduce, pipelined bcast, ring allgather,\n"
                "# routed rows to expert owners with uniform routing)\n");
    std::printf("# payload GB: statistics %.3f  routed %.3f (%lld calibration tokens)  weights %.3f  results %.3f  "
                "total %.3f\n", m.statistics / gb, m.routed / gb, (long long)calib_tokens, m.weights / gb,
                m.results / gb, (m.statistics + m.routed + m.weights + m.results) / gb);
    std::printf("# %6s %14s %15s %12s %12s %12s %14s\n", "ranks", "stats_wire_GB", "routed_wire_GB", "weights_GB",
                "results_GB", "total_GB", "x_1rank_read");
  }
  for (int n : ranks) {
    const double st = m.wire_statistics(n), ro = m.wire_routed(n), w = m.wire_weights(n), r = m.wire_results(n);
    if (json)
      std::printf("{\"model\":\"%s\",\"ranks\":%d,\"statistics_payload\":%llu,\"weights_payload\":%llu,"
                  "\"results_payload\":%llu,\"routed_payload\":%llu,\"statistics_wire\":%.0f,\"routed_wire\":%.0f,"
                  "\"weights_wire\":%.0f,\"results_wire\":%.0f}\n",
                  name.c_str(), n, (unsigned long long)m.statistics, (unsigned long long)m.weights,
                  (unsigned long long)m.results, (unsigned long long)m.routed, st, ro, w, r);
    else  // ratio: what a rank moves over the layer as stored (what one rank alone reads)
      std::printf("  %6d %14.3f %15.3f %12.3f %12.3f %12.3f %14.2f\n", n, st / gb, ro / gb, w / gb, r / gb,
                  (st + ro + w + r) / gb, (st + ro + w + r) / double(m.stored));
  }
  return 0;
}
