#include "core/test_hooks.h"

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/stop.h"

namespace qshard {

namespace {

bool this_rank_selected() {
  const char* want = std::getenv("QSHARD_TEST_KILL_RANK");
  if (!want || !*want) return true;
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (!rank) rank = std::getenv("PMI_RANK");
  if (!rank) rank = std::getenv("PMIX_RANK");  // srun --mpi=pmix
  if (!rank) rank = std::getenv("SLURM_PROCID");
  return std::string(rank ? rank : "0") == want;
}

// "layer-N" only: the mid-layer points ("layer-N-GROUP") and "layer-N-file" must not slow
// a layer again, or a layer takes several times QSHARD_TEST_LAYER_SECONDS.
bool is_layer_commit(const std::string& name) {
  const std::string prefix = "layer-";
  if (name.size() <= prefix.size() || !name.starts_with(prefix)) return false;
  return std::all_of(name.begin() + long(prefix.size()), name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

void test_kill_point(const std::string& name) {
  const char* kill_at = std::getenv("QSHARD_TEST_KILL_AT");
  const char* pause_at = std::getenv("QSHARD_TEST_PAUSE_AT");
  const char* signal_at = std::getenv("QSHARD_TEST_SIGNAL_AT");
  const char* layer_seconds = std::getenv("QSHARD_TEST_LAYER_SECONDS");
  if (kill_at && name == kill_at && this_rank_selected()) std::raise(SIGKILL);
  if (signal_at && name == signal_at && this_rank_selected()) std::raise(SIGTERM);
  if (layer_seconds && is_layer_commit(name)) {
    // Slow layers, so that a signal or a Slurm time limit lands mid-run; a stop request
    // ends the wait (the run then stops at its next safe point).
    for (int i = 0; i < 10 * std::atoi(layer_seconds) && !stop_signal(); ++i) ::usleep(100000);
  }
  if (pause_at && name == pause_at && this_rank_selected()) {
    std::fprintf(stderr, "qshard: paused at %s pid %d\n", name.c_str(), int(::getpid()));
    std::fflush(stderr);
    for (;;) ::pause();
  }
}

}  // namespace qshard
