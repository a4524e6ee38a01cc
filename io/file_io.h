// The output-file protocol every writer shares: errors that say what to do (disk full,
// permissions), and files that appear under their final name only when complete.
#pragma once

#include <string>

namespace qshard {

// InputError for an errno while `doing` (e.g. "creating") `path`.
[[noreturn]] void io_fail(int err, const char* doing, const std::string& path);

// ".NAME.tmp" beside `path`: hidden, so a directory listing never shows it as output.
std::string temp_path_for(const std::string& path);

// Writes bytes to a temporary beside `path`, fsyncs it, renames it into place.
void write_file_atomic(const std::string& path, const std::string& bytes);
// Renames (removing `tmp` on failure) with an actionable error.
void rename_into_place(const std::string& tmp, const std::string& path);
void fsync_file(const std::string& path);
// Makes renames in `dir` durable; best effort (some filesystems refuse).
void fsync_dir(const std::string& dir);

}  // namespace qshard
