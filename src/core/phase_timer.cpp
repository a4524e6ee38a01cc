#include "core/phase_timer.h"

#include "core/log.h"

namespace qshard {

namespace {
PhaseSeconds g_totals;
thread_local PhaseTimer* t_current = nullptr;
}  // namespace

const char* phase_name(Phase p) {
  static const char* const names[kPhases] = {"read", "broadcast", "forward", "hessian",
                                             "allreduce", "fit", "error_report", "export"};
  return names[int(p)];
}

PhaseSeconds PhaseSeconds::operator-(const PhaseSeconds& o) const {
  PhaseSeconds d;
  for (int i = 0; i < kPhases; ++i) d.s[size_t(i)] = s[size_t(i)] - o.s[size_t(i)];
  return d;
}

PhaseSeconds phase_totals() { return g_totals; }

PhaseTimer::PhaseTimer(Phase p) : phase_(p), start_(wall_seconds()), parent_(t_current) { t_current = this; }

PhaseTimer::~PhaseTimer() {
  const double elapsed = wall_seconds() - start_;
  g_totals.s[size_t(phase_)] += elapsed - nested_;
  if (parent_) parent_->nested_ += elapsed;
  t_current = parent_;
}

}  // namespace qshard
