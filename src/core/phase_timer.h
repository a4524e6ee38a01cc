// Wall seconds per pipeline phase, for the per-layer report: where a layer's time goes
// (read, broadcast, forward, Hessian, allreduce, fit, error report, export). Timers
// nest: a phase's time excludes the phases timed inside it, so the phases of a layer
// add up to at most its wall time. Main thread only (the reader thread reports its own
// time with the layer it read).
#pragma once

#include <array>
#include <cstddef>

namespace qshard {

enum class Phase : int { Read, Broadcast, Forward, Hessian, Allreduce, Fit, ErrorReport, Export };
constexpr int kPhases = 8;
const char* phase_name(Phase p);  // "read", "broadcast", ...

struct PhaseSeconds {
  std::array<double, kPhases> s{};
  double of(Phase p) const { return s[std::size_t(p)]; }
  PhaseSeconds operator-(const PhaseSeconds& o) const;
};

// Totals since the process started.
PhaseSeconds phase_totals();

class PhaseTimer {
 public:
  explicit PhaseTimer(Phase p);
  ~PhaseTimer();
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  Phase phase_;
  double start_, nested_ = 0;
  PhaseTimer* parent_;
};

}  // namespace qshard
