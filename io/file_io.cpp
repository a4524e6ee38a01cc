#include "io/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace qshard {

void io_fail(int err, const char* doing, const std::string& path) {
  if (err == ENOSPC || err == EDQUOT)
    fail_input("no space left on device while ", doing, " ", path,
               ": free space there or choose another output directory");
  if (err == EFBIG)
    fail_input("file size limit reached while ", doing, " ", path,
               " (ulimit -f, or the filesystem's largest file): raise the limit, or use a smaller "
               "--max-shard-size");
  if (err == EACCES || err == EPERM || err == EROFS)
    fail_input("permission denied while ", doing, " ", path, " (", std::strerror(err),
               "): choose an output directory you can write to");
  fail_input(doing, " ", path, " failed: ", std::strerror(err));
}

std::string temp_path_for(const std::string& path) {
  const std::filesystem::path p(path);
  std::string name = ".";  // built by appending: GCC 12 warns falsely on "." + string
  name += p.filename().string();
  name += ".tmp";
  return (p.parent_path() / name).string();
}

void fsync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) io_fail(errno, "opening", path);
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    io_fail(err, "syncing", path);
  }
  ::close(fd);
}

void rename_into_place(const std::string& tmp, const std::string& path) {
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    io_fail(err, "renaming into place", path);
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = temp_path_for(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) io_fail(errno, "creating", tmp);
  const char* p = bytes.data();
  size_t n = bytes.size();
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      io_fail(err, "writing", tmp);
    }
    p += w;
    n -= size_t(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    io_fail(err, "syncing", tmp);
  }
  rename_into_place(tmp, path);
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace qshard
