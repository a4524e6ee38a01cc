#include "core/stop.h"

#include <csignal>

namespace qshard {

namespace {

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int sig) {
  if (sig == SIGINT && g_stop == SIGINT) {  // Ctrl-C twice: do not wait for a safe point
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
    return;
  }
  if (g_stop == 0) g_stop = sig;
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and MPI waits go on; the flag is looked at later
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

int stop_signal() { return g_stop; }

std::string signal_name(int sig) {
  if (sig == SIGTERM) return "SIGTERM";
  if (sig == SIGINT) return "SIGINT";
  return str_cat("signal ", sig);
}

}  // namespace qshard
