// Writing safetensors shards. The header precedes the data and lists every tensor of
// the shard, yet tensors arrive one at a time and must not be held in memory: so each
// shard's data is streamed to a temporary file, and header + data are assembled into
// another temporary when the shard closes. Final names appear only in finish().
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/file_io.h"
#include "io/safetensors.h"

namespace qshard {

namespace {

int open_for_write(const std::string& path, int extra_flags = 0) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | extra_flags, 0644);
  if (fd < 0) io_fail(errno, "creating", path);
  return fd;
}

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      io_fail(errno, "writing", path);
    }
    p += w;
    n -= size_t(w);
  }
}

// Appends bytes [0, n) of in_fd to out_fd. copy_file_range keeps the copy in the kernel
// (and is a reflink on XFS/btrfs); older kernels and cross-device copies fall back.
void append_file(int in_fd, uint64_t n, int out_fd, const std::string& in_path,
                 const std::string& out_path) {
  loff_t in_off = 0;
  while (in_off < loff_t(n)) {
    const ssize_t c = ::copy_file_range(in_fd, &in_off, out_fd, nullptr,
                                        std::min<uint64_t>(n - in_off, 1ull << 30), 0);
    if (c > 0) continue;
    if (c == 0) fail_input(in_path, " ended early while copying it into ", out_path);
    if (errno == EINTR) continue;
    if (errno != ENOSYS && errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP)
      io_fail(errno, "writing", out_path);
    std::vector<char> buf(8 << 20);
    while (in_off < loff_t(n)) {
      const ssize_t r = ::pread(in_fd, buf.data(), std::min<uint64_t>(buf.size(), n - in_off),
                                in_off);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) io_fail(errno, "reading", in_path);
      if (r == 0) fail_input(in_path, " ended early while copying it into ", out_path);
      write_all(out_fd, buf.data(), size_t(r), out_path);
      in_off += r;
    }
  }
}

// fsync + close, both checked: NFS and full disks report write errors only here.
void sync_and_close(int fd, const std::string& path) {
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    io_fail(err, "syncing", path);
  }
  if (::close(fd) != 0) io_fail(errno, "closing", path);
}

std::string shard_number(size_t i) {
  std::ostringstream os;
  os << std::setw(5) << std::setfill('0') << i;
  return os.str();
}

// <basename>-<digits>-of-<digits>.safetensors, the Hugging Face shard naming.
bool is_shard_name(std::string_view f, std::string_view base) {
  auto digits = [&f](size_t& pos) {
    const size_t start = pos;
    while (pos < f.size() && f[pos] >= '0' && f[pos] <= '9') ++pos;
    return pos > start;
  };
  if (!f.starts_with(base) || f.size() <= base.size() || f[base.size()] != '-') return false;
  size_t pos = base.size() + 1;
  if (!digits(pos) || f.substr(pos, 4) != "-of-") return false;
  pos += 4;
  return digits(pos) && f.substr(pos) == ".safetensors";
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(std::string out_dir, std::string basename,
                                     uint64_t max_shard_bytes,
                                     std::map<std::string, std::string> metadata,
                                     std::string temp_tag)
    : out_dir_(std::move(out_dir)),
      basename_(std::move(basename)),
      temp_tag_(std::move(temp_tag)),
      max_shard_bytes_(max_shard_bytes),
      metadata_(std::move(metadata)) {
  QS_ASSERT(!basename_.empty() && basename_.find('/') == std::string::npos,
            "basename must be a plain file name: ", basename_);
  std::error_code ec;
  std::filesystem::create_directories(out_dir_, ec);
  if (ec)
    fail_input("cannot create output directory ", out_dir_, ": ", ec.message(),
               ": choose a directory you can write to");
}

SafetensorsWriter::~SafetensorsWriter() {
  if (!finished_) remove_temporaries();
}

void SafetensorsWriter::remove_temporaries() noexcept {
  if (data_fd_ >= 0) ::close(data_fd_);
  data_fd_ = -1;
  for (const auto& s : shards_) {
    ::unlink(s.data_tmp.c_str());
    ::unlink(s.shard_tmp.c_str());
  }
  ::unlink((out_dir_ + "/." + basename_ + ".safetensors.index.json.tmp").c_str());
}

void SafetensorsWriter::open_shard() {
  Shard s;
  const std::string stem = out_dir_ + "/." + basename_ + (temp_tag_.empty() ? "" : "-" + temp_tag_) +
                           "-" + shard_number(shards_.size() + 1);
  s.data_tmp = stem + ".data.tmp";
  s.shard_tmp = stem + ".safetensors.tmp";
  shards_.push_back(std::move(s));  // first, so the destructor cleans up after a failed open
  data_fd_ = ::open(shards_.back().data_tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (data_fd_ < 0) io_fail(errno, "creating", shards_.back().data_tmp);
}

void SafetensorsWriter::add(const std::string& name, const Tensor& t) {
  QS_ASSERT(!finished_, "add('", name, "') after finish()");
  QS_ASSERT(!name.empty() && name != "__metadata__", "invalid tensor name '", name, "'");
  QS_ASSERT(t.device() == Device::Host, "tensor '", name, "' must be on the host to be written");
  if (names_.count(name)) fail("tensor '", name, "' was added twice to the checkpoint in ", out_dir_);
  const uint64_t bytes = t.nbytes();
  QS_ASSERT(bytes == 0 || t.raw() != nullptr, "tensor '", name, "' has no data");
  QS_ASSERT(!broken_, "add('", name, "') after an earlier write failed");
  broken_ = true;  // until this add completes: a half-written tensor poisons the offsets

  if (data_fd_ >= 0 && !shards_.back().entries.empty() &&
      shards_.back().bytes + bytes > max_shard_bytes_)
    close_shard();
  if (data_fd_ < 0) open_shard();
  Shard& s = shards_.back();
  write_all(data_fd_, t.raw(), bytes, s.data_tmp);
  s.entries.push_back({name, t.dtype(), t.shape(), s.bytes, s.bytes + bytes});
  s.bytes += bytes;
  names_.insert(name);
  broken_ = false;
}

void SafetensorsWriter::close_shard() {
  Shard& s = shards_.back();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  for (const auto& e : s.entries)
    header[e.name] = {{"dtype", std::string(dtype_name(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {e.begin, e.end}}};
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("tensor names and metadata must be valid UTF-8 (", e.what(), ")");
  }
  // Pad with spaces so the data region starts 8-byte aligned, as the Rust writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  const int fd = open_for_write(s.shard_tmp);
  try {
    write_all(fd, len, 8, s.shard_tmp);
    write_all(fd, text.data(), text.size(), s.shard_tmp);
    append_file(data_fd_, s.bytes, fd, s.data_tmp, s.shard_tmp);
  } catch (...) {
    ::close(fd);
    throw;
  }
  sync_and_close(fd, s.shard_tmp);
  ::close(data_fd_);
  data_fd_ = -1;
  ::unlink(s.data_tmp.c_str());
}

std::vector<std::string> SafetensorsWriter::finish() {
  QS_ASSERT(!finished_, "finish() called twice");
  QS_ASSERT(!broken_, "finish() after an earlier write failed");
  if (data_fd_ < 0 && shards_.empty()) open_shard();  // no tensors: a metadata-only file
  std::vector<Part> parts = close_parts();
  finished_ = false;  // the temporaries are still ours until renamed
  broken_ = true;     // a failed commit cannot be retried; the destructor cleans up
  std::vector<std::string> paths = commit_shards(out_dir_, basename_, parts);
  finished_ = true;
  return paths;
}

std::vector<SafetensorsWriter::Part> SafetensorsWriter::close_parts() {
  QS_ASSERT(!finished_, "close_parts() after finish()");
  QS_ASSERT(!broken_, "close_parts() after an earlier write failed");
  broken_ = true;
  if (data_fd_ >= 0) close_shard();
  std::vector<Part> parts;
  for (const Shard& s : shards_) {
    Part p{s.shard_tmp, s.bytes, {}};
    for (const auto& e : s.entries) p.names.push_back(e.name);
    parts.push_back(std::move(p));
  }
  broken_ = false;
  finished_ = true;  // handed over: the destructor leaves the temporaries alone
  return parts;
}

std::vector<std::string> SafetensorsWriter::commit_shards(const std::string& out_dir,
                                                          const std::string& basename,
                                                          const std::vector<Part>& parts) {
  const size_t n = parts.size();
  QS_ASSERT(n > 0, "commit_shards of no shards into ", out_dir);
  const std::string index_path = out_dir + "/" + basename + ".safetensors.index.json";
  auto final_name = [&](size_t i) {
    if (n == 1) return basename + ".safetensors";
    return basename + "-" + shard_number(i + 1) + "-of-" + shard_number(n) + ".safetensors";
  };

  // An index left by an earlier sharded run would make readers ignore a new single file.
  if (n == 1 && ::unlink(index_path.c_str()) != 0 && errno != ENOENT)
    io_fail(errno, "removing stale", index_path);

  std::vector<std::string> paths, files;
  for (size_t i = 0; i < n; ++i) {
    files.push_back(final_name(i));
    paths.push_back(out_dir + "/" + files.back());
    if (::rename(parts[i].tmp_path.c_str(), paths.back().c_str()) != 0)
      io_fail(errno, "renaming into place", paths.back());
  }

  if (n > 1) {
    nlohmann::json index;
    uint64_t total = 0;
    for (size_t i = 0; i < n; ++i) {
      total += parts[i].bytes;
      for (const auto& name : parts[i].names) {
        if (index["weight_map"].contains(name))
          fail("tensor '", name, "' was written twice to the checkpoint in ", out_dir);
        index["weight_map"][name] = files[i];
      }
    }
    index["metadata"] = {{"total_size", total}};
    const std::string text = index.dump(2) + "\n";
    const std::string tmp = out_dir + "/." + basename + ".safetensors.index.json.tmp";
    const int fd = open_for_write(tmp);
    try {
      write_all(fd, text.data(), text.size(), tmp);
    } catch (...) {
      ::close(fd);
      throw;
    }
    sync_and_close(fd, tmp);
    if (::rename(tmp.c_str(), index_path.c_str()) != 0)
      io_fail(errno, "renaming into place", index_path);
  }

  // Shards of an earlier run with another shard count (or its single file) would be
  // picked up by tools that glob or that prefer model.safetensors over the index.
  const std::string single = basename + ".safetensors";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(out_dir, ec)) {
    const std::string f = entry.path().filename().string();
    const bool stale = (is_shard_name(f, basename) || (n > 1 && f == single)) &&
                       std::find(files.begin(), files.end(), f) == files.end();
    if (stale) ::unlink(entry.path().c_str());
  }

  // Make the renames durable before reporting success.
  fsync_dir(out_dir);
  return paths;
}

}  // namespace qshard
