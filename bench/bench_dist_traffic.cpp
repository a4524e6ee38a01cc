// Bytes one decoder layer communicates, by kind, from pipeline/traffic_model.h (the
// rules the pipeline's collectives follow), for a config.json or Llama-3-70B geometry,
// at several rank counts. Prints a table; --json for one object per row.
//   build/bench/bench_dist_traffic [--config DIR/config.json] [--format int4] [--group-size 128]
//                                  [--ranks 2,8,64] [--json]
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
  std::string config, format = "int4";
  int64_t group = 128;
  std::vector<int> ranks = {8, 64};
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--config") config = next();
    else if (a == "--format") format = next();
    else if (a == "--group-size") group = std::stoll(next());
    else if (a == "--json") json = true;
    else if (a == "--ranks") {
      ranks.clear();
      std::stringstream ss(next());
      for (std::string t; std::getline(ss, t, ',');) ranks.push_back(std::stoi(t));
    } else {
      std::fprintf(stderr, "usage: %s [--config config.json] [--format int4] [--group-size 128] [--ranks 8,64] [--json]\n", argv[0]);
      return 2;
    }
  }
  ModelSpec s;
  std::string name = "llama-3-70b";
  if (config.empty()) {  // Llama-3-70B: hidden 8192, intermediate 28672, 64/8 heads of 128
    s.hidden_size = 8192, s.intermediate_size = 28672, s.num_layers = 80;
    s.n_heads = 64, s.n_kv_heads = 8, s.head_dim = 128, s.vocab_size = 128256;
  } else {
    s = ModelSpec::from_json(read_json_file(config), config);
    name = config;
  }
  const QuantFormat f = QuantFormat::parse(format, group, true);
  const LayerTrafficModel m = layer_traffic_model(s, f);
  const double gb = 1e9;
  if (!json) {
    std::printf("# %s, %s; per decoder layer. payload = bytes the Communicator counts (any N > 1);\n", name.c_str(),
                f.describe().c_str());
    std::printf("# wire = estimated bytes each rank moves (ring allreduce, pipelined bcast, ring allgather)\n");
    std::printf("# payload GB: statistics %.3f  weights %.3f  results %.3f  total %.3f\n", m.statistics / gb,
                m.weights / gb, m.results / gb, (m.statistics + m.weights + m.results) / gb);
    std::printf("# %6s %14s %12s %12s %12s %14s\n", "ranks", "stats_wire_GB", "weights_GB", "results_GB", "total_GB",
                "x_1rank_read");
  }
  for (int n : ranks) {
    const double st = m.wire_statistics(n), w = m.wire_weights(n), r = m.wire_results(n);
    if (json)
      std::printf("{\"model\":\"%s\",\"ranks\":%d,\"statistics_payload\":%llu,\"weights_payload\":%llu,"
                  "\"results_payload\":%llu,\"statistics_wire\":%.0f,\"weights_wire\":%.0f,\"results_wire\":%.0f}\n",
                  name.c_str(), n, (unsigned long long)m.statistics, (unsigned long long)m.weights,
                  (unsigned long long)m.results, st, w, r);
    else  // ratio: what a rank moves over what one rank reads from disk per layer
      std::printf("  %6d %14.3f %12.3f %12.3f %12.3f %14.2f\n", n, st / gb, w / gb, r / gb, (st + w + r) / gb,
                  (st + w + r) / double(m.weights));
  }
  return 0;
}
