#include "pipeline/report.h"

#include "core/error.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

namespace qshard {

HostMemory host_memory() {
  HostMemory m;
  std::ifstream f("/proc/self/status");
  std::string line;
  auto kb = [](const std::string& l) {
    std::istringstream is(l.substr(l.find(':') + 1));
    uint64_t v = 0;
    is >> v;
    return v * 1024;
  };
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) m.rss_bytes = kb(line);
    if (line.rfind("VmHWM:", 0) == 0) m.peak_rss_bytes = kb(line);
  }
  return m;
}

LayerReport layer_report(int64_t layer, double seconds, uint64_t weight_bytes, const TrafficCounters& traffic) {
  const HostMemory m = host_memory();
  LayerReport r;
  r.layer = layer;
  r.seconds = seconds;
  r.rss_bytes = m.rss_bytes;
  r.peak_rss_bytes = m.peak_rss_bytes;
  r.weight_bytes = weight_bytes;
  r.traffic = traffic;
  return r;
}

namespace {

nlohmann::json phases_json(const LayerReport& l) {
  nlohmann::json p;
  for (int k = 0; k < kPhases; ++k) p[phase_name(Phase(k))] = l.phases.s[size_t(k)];
  p["read_thread"] = l.read_seconds;
  return p;
}

void print_phases(std::FILE* out, const std::vector<LayerReport>& layers) {
  std::fprintf(out, "# %-6s", "layer");
  for (int k = 0; k < kPhases; ++k) std::fprintf(out, " %12s", phase_name(Phase(k)));
  std::fprintf(out, " %12s %12s  (seconds; read_thread overlaps the layer before)\n", "other", "read_thread");
  for (const auto& l : layers) {
    double sum = 0;
    std::fprintf(out, "  %-6lld", (long long)l.layer);
    for (int k = 0; k < kPhases; ++k) {
      std::fprintf(out, " %12.3f", l.phases.s[size_t(k)]);
      sum += l.phases.s[size_t(k)];
    }
    std::fprintf(out, " %12.3f %12.3f\n", l.seconds - sum, l.read_seconds);
  }
}

}  // namespace

std::string QuantizeReport::to_json() const {
  nlohmann::json j;
  j["model"] = model_dir;
  j["method"] = method;
  j["format"] = format;
  j["export"] = export_kind;
  j["calibration"] = {{"samples", calib_samples}, {"seqlen", calib_seqlen}};
  j["ranks"] = ranks;
  j["seconds"] = seconds;
  double sum = 0;
  int n = 0;
  for (const auto& m : modules) {
    j["modules"].push_back({{"module", m.module}, {"format", m.format}, {"rel_error", m.rel_error},
                            {"gptq_loss", m.gptq_loss}, {"seconds", m.seconds},
                            {"damp_escalations", m.damp_escalations}});
    if (m.routed_tokens >= 0) {
      j["modules"].back()["routed_tokens"] = m.routed_tokens;
      j["modules"].back()["rtn_fallback"] = m.rtn_fallback;
    }
    if (m.format != "skipped") {
      sum += m.rel_error;
      ++n;
    }
  }
  j["mean_rel_error"] = n ? sum / n : 0.0;
  for (const auto& l : layers) {
    nlohmann::json t;
    for (int k = 0; k < kTrafficKinds; ++k) t[traffic_name(Traffic(k))] = l.traffic.bytes[size_t(k)];
    j["layers"].push_back({{"layer", l.layer}, {"seconds", l.seconds}, {"rss_bytes", l.rss_bytes},
                           {"peak_rss_bytes", l.peak_rss_bytes}, {"weight_bytes", l.weight_bytes},
                           {"comm_bytes", t}, {"phase_seconds", phases_json(l)}});
  }
  return j.dump(2);
}

void QuantizeReport::print_table(std::FILE* out) const {
  std::fprintf(out, "# %-44s %-16s %12s %12s %8s\n", "module", "format", "rel_error", "gptq_loss", "seconds");
  for (const auto& m : modules)
    std::fprintf(out, "  %-44s %-16s %12.4e %12.4e %8.3f%s%s\n", m.module.c_str(), m.format.c_str(),
                 m.rel_error, m.gptq_loss, m.seconds,
                 m.damp_escalations ? "  (damping escalated)" : "",
                 m.routed_tokens < 0 ? ""
                                     : str_cat("  (", m.routed_tokens, " tokens", m.rtn_fallback ? ", rtn" : "", ")").c_str());
  if (!layers.empty()) {
    std::fprintf(out, "# %-6s %8s %10s %10s %10s %12s %12s %12s\n", "layer", "seconds", "rss_MiB",
                 "peak_MiB", "weights_MiB", "stats_MiB", "bcast_MiB", "results_MiB");
    const double mib = 1024.0 * 1024.0;
    for (const auto& l : layers)
      std::fprintf(out, "  %-6lld %8.3f %10.1f %10.1f %10.2f %12.2f %12.2f %12.2f\n", (long long)l.layer,
                   l.seconds, l.rss_bytes / mib, l.peak_rss_bytes / mib, l.weight_bytes / mib,
                   l.traffic.of(Traffic::Statistics) / mib, l.traffic.of(Traffic::Weights) / mib,
                   l.traffic.of(Traffic::Results) / mib);
    print_phases(out, layers);
  }
  std::fprintf(out, "# %s %s, %lld x %lld calibration tokens, %d rank(s), %.2f s\n", method.c_str(),
               format.c_str(), (long long)calib_samples, (long long)calib_seqlen, ranks, seconds);
}

}  // namespace qshard
