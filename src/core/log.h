// Logging that knows its rank: info goes to stderr from rank 0 only, warnings from
// every rank tagged with the rank, so a multi-rank run stays readable.
#pragma once

#include <string>

#include "core/error.h"

namespace qshard {

enum class LogLevel { Quiet = 0, Info = 1, Debug = 2 };

void log_set_rank(int rank, int world_size);
void log_set_level(LogLevel level);
LogLevel log_level();

void log_info_line(const std::string& line);   // rank 0 only
void log_debug_line(const std::string& line);  // rank 0 only, at Debug
void log_warn_line(const std::string& line);   // every rank, "[rank r] warning: ..."

template <class... P>
void log_info(P&&... p) {
  log_info_line(str_cat(std::forward<P>(p)...));
}
template <class... P>
void log_debug(P&&... p) {
  log_debug_line(str_cat(std::forward<P>(p)...));
}
template <class... P>
void log_warn(P&&... p) {
  log_warn_line(str_cat(std::forward<P>(p)...));
}

// Progress of a long loop on stderr with rate and ETA, rewritten in place on a
// terminal and printed every few seconds otherwise (logs of batch jobs).
class Progress {
 public:
  Progress(std::string what, int64_t total, std::string unit);
  void update(int64_t done);  // absolute count
  void finish();

 private:
  std::string what_, unit_;
  int64_t total_;
  int64_t last_done_ = -1;
  double start_, last_print_ = -1e9;
  bool tty_, finished_ = false;
};

double wall_seconds();  // monotonic

}  // namespace qshard
