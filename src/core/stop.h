// Clean stops. SIGTERM (Slurm's scancel, time limit and preemption; mpirun passes it on)
// and SIGINT (Ctrl-C) only set a flag; long loops look at it at safe points, where
// everything finished so far is on disk, and end the run with Stopped. Under MPI the
// ranks agree first (pipeline/quantize.cpp: an allreduce at every safe point), so the
// rank that got the signal stops all ranks at the same point. A second Ctrl-C ends the
// process at once; repeated SIGTERMs (Slurm and mpirun may both send one) are one request.
#pragma once

#include <string>

#include "core/error.h"

namespace qshard {

// Installs the SIGTERM / SIGINT handlers (main, before any work).
void install_stop_handlers();

// 0, or the signal that asked this process to stop.
int stop_signal();

// "SIGTERM", "SIGINT" (or "signal N").
std::string signal_name(int sig);

// The run ended at a safe point because of `signal`; what() is the line to print.
class Stopped : public Error {
 public:
  Stopped(int signal, const std::string& what) : Error(what), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

}  // namespace qshard
