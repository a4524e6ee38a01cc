// What quantization cost, per module: relative output error on the calibration inputs
// ‖WX − QX‖² / ‖WX‖², GPTQ's own loss, and time. JSON in the output directory and a
// table on stdout.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/phase_timer.h"
#include "dist/communicator.h"

namespace qshard {

struct ModuleReport {
  std::string module;   // "model.layers.3.mlp.down_proj"
  std::string format;   // "int4 g128 sym", or "skipped"
  double rel_error = 0;
  double gptq_loss = 0;  // 0 for RTN
  double seconds = 0;
  int damp_escalations = 0;
  int64_t routed_tokens = -1;  // MoE experts: calibration tokens routed to it; -1 otherwise
  bool rtn_fallback = false;   // an expert with too few tokens, quantized with RTN
};

// One decoder layer on this rank (rank 0's numbers in the report): wall time, host
// memory after the layer (resident, and the process's peak so far), the layer's
// original weights as read/broadcast, and bytes communicated by kind.
struct LayerReport {
  int64_t layer = 0;
  double seconds = 0;
  uint64_t rss_bytes = 0, peak_rss_bytes = 0;
  uint64_t weight_bytes = 0;
  TrafficCounters traffic;
  PhaseSeconds phases;      // main-thread seconds per phase (core/phase_timer.h)
  double read_seconds = 0;  // the owner's reader thread, overlapped with the layer before
};
LayerReport layer_report(int64_t layer, double seconds, uint64_t weight_bytes, const TrafficCounters& traffic);

// Resident and peak resident host memory of this process (/proc/self/status), 0 if unknown.
struct HostMemory {
  uint64_t rss_bytes = 0, peak_rss_bytes = 0;
};
HostMemory host_memory();

struct QuantizeReport {
  std::string model_dir, method, format, export_kind;
  int64_t calib_samples = 0, calib_seqlen = 0;
  int ranks = 1;
  double seconds = 0;
  std::vector<ModuleReport> modules;
  std::vector<LayerReport> layers;

  std::string to_json() const;  // pretty-printed
  void print_table(std::FILE* out) const;
};

}  // namespace qshard
