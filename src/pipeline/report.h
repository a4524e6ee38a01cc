// What quantization cost, per module: relative output error on the calibration inputs
// ‖WX − QX‖² / ‖WX‖², GPTQ's own loss, and time. JSON in the output directory and a
// table on stdout.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace qshard {

struct ModuleReport {
  std::string module;   // "model.layers.3.mlp.down_proj"
  std::string format;   // "int4 g128 sym", or "skipped"
  double rel_error = 0;
  double gptq_loss = 0;  // 0 for RTN
  double seconds = 0;
  int damp_escalations = 0;
};

struct QuantizeReport {
  std::string model_dir, method, format, export_kind;
  int64_t calib_samples = 0, calib_seqlen = 0;
  int ranks = 1;
  double seconds = 0;
  std::vector<ModuleReport> modules;

  std::string to_json() const;  // pretty-printed
  void print_table(std::FILE* out) const;
};

}  // namespace qshard
