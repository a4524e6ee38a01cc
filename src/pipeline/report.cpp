#include "pipeline/report.h"

#include <nlohmann/json.hpp>

namespace qshard {

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
    if (m.format != "skipped") {
      sum += m.rel_error;
      ++n;
    }
  }
  j["mean_rel_error"] = n ? sum / n : 0.0;
  return j.dump(2);
}

void QuantizeReport::print_table(std::FILE* out) const {
  std::fprintf(out, "# %-44s %-16s %12s %12s %8s\n", "module", "format", "rel_error", "gptq_loss", "seconds");
  for (const auto& m : modules)
    std::fprintf(out, "  %-44s %-16s %12.4e %12.4e %8.3f%s\n", m.module.c_str(), m.format.c_str(),
                 m.rel_error, m.gptq_loss, m.seconds,
                 m.damp_escalations ? "  (damping escalated)" : "");
  std::fprintf(out, "# %s %s, %lld x %lld calibration tokens, %d rank(s), %.2f s\n", method.c_str(),
               format.c_str(), (long long)calib_samples, (long long)calib_seqlen, ranks, seconds);
}

}  // namespace qshard
