#include "core/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

namespace qshard {

namespace {
int g_rank = 0;
int g_world = 1;
LogLevel g_level = LogLevel::Info;

std::string fmt_duration(double s) {
  char buf[32];
  if (s < 0 || s > 1e7) return "?";
  const int t = int(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%dh%02dm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%dm%02ds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%ds", t);
  return buf;
}
}  // namespace

void log_set_rank(int rank, int world_size) {
  g_rank = rank;
  g_world = world_size;
}
void log_set_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_info_line(const std::string& line) {
  if (g_rank != 0 || g_level < LogLevel::Info) return;
  std::fprintf(stderr, "%s\n", line.c_str());
}
void log_debug_line(const std::string& line) {
  if (g_rank != 0 || g_level < LogLevel::Debug) return;
  std::fprintf(stderr, "debug: %s\n", line.c_str());
}
void log_warn_line(const std::string& line) {
  if (g_world > 1)
    std::fprintf(stderr, "[rank %d] warning: %s\n", g_rank, line.c_str());
  else
    std::fprintf(stderr, "warning: %s\n", line.c_str());
}

double wall_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string what, int64_t total, std::string unit)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), start_(wall_seconds()),
      tty_(isatty(STDERR_FILENO)) {}

void Progress::update(int64_t done) {
  if (g_rank != 0 || g_level < LogLevel::Info || finished_) return;
  const double now = wall_seconds();
  if (done == last_done_ || (now - last_print_ < (tty_ ? 0.2 : 10.0) && done < total_)) return;
  last_print_ = now;
  last_done_ = done;
  const double el = now - start_;
  const double rate = el > 0 ? double(done) / el : 0;
  const double eta = rate > 0 ? double(total_ - done) / rate : -1;
  std::fprintf(stderr, "%s%s: %lld/%lld %s, %.1f %s/s, elapsed %s, ETA %s%s",
               tty_ ? "\r" : "", what_.c_str(), (long long)done, (long long)total_,
               unit_.c_str(), rate, unit_.c_str(), fmt_duration(el).c_str(),
               fmt_duration(eta).c_str(), tty_ ? "\x1b[K" : "\n");
  std::fflush(stderr);
}

void Progress::finish() {
  if (finished_) return;
  update(total_);
  finished_ = true;
  if (tty_ && g_rank == 0 && g_level >= LogLevel::Info) std::fprintf(stderr, "\n");
}

}  // namespace qshard
