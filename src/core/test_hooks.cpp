#include "core/test_hooks.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

namespace qshard {

namespace {

bool this_rank_selected() {
  const char* want = std::getenv("QSHARD_TEST_KILL_RANK");
  if (!want || !*want) return true;
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (!rank) rank = std::getenv("PMI_RANK");
  return std::string(rank ? rank : "0") == want;
}

}  // namespace

void test_kill_point(const std::string& name) {
  const char* kill_at = std::getenv("QSHARD_TEST_KILL_AT");
  const char* pause_at = std::getenv("QSHARD_TEST_PAUSE_AT");
  if (kill_at && name == kill_at && this_rank_selected()) std::raise(SIGKILL);
  if (pause_at && name == pause_at && this_rank_selected()) {
    std::fprintf(stderr, "qshard: paused at %s pid %d\n", name.c_str(), int(::getpid()));
    std::fflush(stderr);
    for (;;) ::pause();
  }
}

}  // namespace qshard
