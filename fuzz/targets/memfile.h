// Fuzz input as a real file path (a memfd: no disk traffic), for readers that take paths.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace qshard::fuzz {

// The path of a file holding exactly these bytes; "" if that failed. One per name.
inline std::string as_file(const char* name, const uint8_t* data, size_t size) {
  const int fd = ::memfd_create(name, 0);
  if (fd < 0) return "";
  if (::pwrite(fd, data, size, 0) != ssize_t(size)) {
    ::close(fd);
    return "";
  }
  // Closed by the caller through close_file(); the path stays valid while it is open.
  return "/proc/self/fd/" + std::to_string(fd);
}

inline void close_file(const std::string& path) {
  if (path.empty()) return;
  ::close(std::stoi(path.substr(path.rfind('/') + 1)));
}

}  // namespace qshard::fuzz
