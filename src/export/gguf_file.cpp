#include "export/gguf_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>

#include "core/error.h"
#include "io/file_io.h"

namespace qshard::exporting {

namespace {

constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;  // general.alignment's default
constexpr size_t kMaxName = 63;      // GGML_MAX_NAME 64, NUL included
// gguf_type values
enum : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out.append(b, sizeof(T));
}

void put_str(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

uint64_t pad_to(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

// The fallback copy's buffer: bounded, whatever the tensor's size.
constexpr uint64_t kCopyChunk = uint64_t(4) << 20;

void write_all(int fd, const void* data, uint64_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = ::write(fd, p, size_t(std::min<uint64_t>(bytes, uint64_t(1) << 30)));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) io_fail(errno, "writing", path);
    p += w;
    bytes -= uint64_t(w);
  }
}

void pread_all(int fd, uint64_t offset, void* out, uint64_t bytes, const std::string& path) {
  char* p = static_cast<char*>(out);
  while (bytes > 0) {
    const ssize_t r = ::pread(fd, p, size_t(std::min<uint64_t>(bytes, uint64_t(1) << 30)), off_t(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) io_fail(errno, "reading", path);
    if (r == 0) fail_input(path, ": ends before byte ", offset + bytes, " (was it changed or truncated "
                           "while the export ran? run the command again)");
    p += r, offset += uint64_t(r), bytes -= uint64_t(r);
  }
}

// Closes the descriptors it holds (the sources of a write, one per path).
struct Fds {
  std::map<std::string, int> open;
  ~Fds() {
    for (const auto& [path, fd] : open) ::close(fd);
  }
  int get(const std::string& path) {
    if (auto it = open.find(path); it != open.end()) return it->second;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) io_fail(errno, "opening", path);
    open[path] = fd;
    return fd;
  }
};

struct TypeInfo {
  int64_t block;
  uint64_t bytes;
};

TypeInfo type_info(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return {1, 4};
    case GgmlType::F16: return {1, 2};
    case GgmlType::BF16: return {1, 2};
    case GgmlType::Q4_0: return {32, 18};
    case GgmlType::Q4_1: return {32, 20};
    case GgmlType::Q5_0: return {32, 22};
    case GgmlType::Q5_1: return {32, 24};
    case GgmlType::Q8_0: return {32, 34};
    case GgmlType::Q2_K: return {256, 84};
    case GgmlType::Q3_K: return {256, 110};
    case GgmlType::Q4_K: return {256, 144};
    case GgmlType::Q5_K: return {256, 176};
    case GgmlType::Q6_K: return {256, 210};
    case GgmlType::IQ4_NL: return {32, 18};
    case GgmlType::IQ4_XS: return {256, 136};
  }
  QS_ASSERT(false, "ggml type ", uint32_t(t));
}

}  // namespace

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return "F32";
    case GgmlType::F16: return "F16";
    case GgmlType::BF16: return "BF16";
    case GgmlType::Q4_0: return "Q4_0";
    case GgmlType::Q4_1: return "Q4_1";
    case GgmlType::Q5_0: return "Q5_0";
    case GgmlType::Q5_1: return "Q5_1";
    case GgmlType::Q8_0: return "Q8_0";
    case GgmlType::Q2_K: return "Q2_K";
    case GgmlType::Q3_K: return "Q3_K";
    case GgmlType::Q4_K: return "Q4_K";
    case GgmlType::Q5_K: return "Q5_K";
    case GgmlType::Q6_K: return "Q6_K";
    case GgmlType::IQ4_NL: return "IQ4_NL";
    case GgmlType::IQ4_XS: return "IQ4_XS";
  }
  return "?";
}

uint64_t ggml_row_bytes(GgmlType t, int64_t n) {
  const TypeInfo ti = type_info(t);
  QS_ASSERT(n % ti.block == 0, "row of ", n, " not a multiple of ", ti.block);
  return uint64_t(n / ti.block) * ti.bytes;
}

uint64_t ggml_tensor_bytes(GgmlType t, const std::vector<int64_t>& shape) {
  uint64_t bytes = ggml_row_bytes(t, shape.back());
  for (size_t i = 0; i + 1 < shape.size(); ++i) bytes *= uint64_t(shape[i]);
  return bytes;
}

void GgufFile::set_string(const std::string& key, const std::string& v) {
  put_str(kv_, key), put<uint32_t>(kv_, kString), put_str(kv_, v), ++n_kv_;
}
void GgufFile::set_u32(const std::string& key, uint32_t v) {
  put_str(kv_, key), put<uint32_t>(kv_, kU32), put<uint32_t>(kv_, v), ++n_kv_;
}
void GgufFile::set_i32(const std::string& key, int32_t v) {
  put_str(kv_, key), put<uint32_t>(kv_, kI32), put<int32_t>(kv_, v), ++n_kv_;
}
void GgufFile::set_f32(const std::string& key, float v) {
  put_str(kv_, key), put<uint32_t>(kv_, kF32), put<float>(kv_, v), ++n_kv_;
}
void GgufFile::set_bool(const std::string& key, bool v) {
  put_str(kv_, key), put<uint32_t>(kv_, kBool), put<uint8_t>(kv_, v ? 1 : 0), ++n_kv_;
}
void GgufFile::set_strings(const std::string& key, const std::vector<std::string>& v) {
  put_str(kv_, key), put<uint32_t>(kv_, kArray), put<uint32_t>(kv_, kString), put<uint64_t>(kv_, v.size());
  for (const auto& s : v) put_str(kv_, s);
  ++n_kv_;
}
void GgufFile::set_f32s(const std::string& key, const std::vector<float>& v) {
  put_str(kv_, key), put<uint32_t>(kv_, kArray), put<uint32_t>(kv_, kF32), put<uint64_t>(kv_, v.size());
  for (float x : v) put<float>(kv_, x);
  ++n_kv_;
}
void GgufFile::set_i32s(const std::string& key, const std::vector<int32_t>& v) {
  put_str(kv_, key), put<uint32_t>(kv_, kArray), put<uint32_t>(kv_, kI32), put<uint64_t>(kv_, v.size());
  for (int32_t x : v) put<int32_t>(kv_, x);
  ++n_kv_;
}

uint64_t GgufFile::check_tensor(const std::string& name, const std::vector<int64_t>& shape,
                                GgmlType type) const {
  if (name.size() > kMaxName)
    fail_input("GGUF export: tensor name '", name, "' has ", name.size(), " bytes; GGUF (ggml's "
               "GGML_MAX_NAME) allows ", kMaxName);
  if (shape.empty() || shape.size() > 4)
    fail_input("GGUF export: tensor ", name, " has ", shape.size(), " dimensions; GGUF holds 1 to 4");
  // ggml counts elements and bytes in int64 (ggml_nelements, ggml_nbytes): refuse what
  // would overflow them rather than write a file llama.cpp misreads.
  int64_t n = 1;
  for (const int64_t d : shape) {
    if (d <= 0 || n > std::numeric_limits<int64_t>::max() / 8 / d)
      fail_input("GGUF export: tensor ", name, " of ", shape.size(), " dimensions is too large "
                 "for GGUF (its element or byte count exceeds ggml's int64 limits, or a "
                 "dimension is not positive): split the tensor or export safetensors");
    n *= d;
  }
  return ggml_tensor_bytes(type, shape);
}

void GgufFile::add_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                          std::vector<uint8_t> data) {
  const uint64_t want = check_tensor(name, shape, type);
  QS_ASSERT(data.size() == want, "tensor ", name, ": ", data.size(), " bytes, expected ", want);
  tensors_.push_back({name, shape, type, want, std::move(data), {}});
}

void GgufFile::add_tensor_at(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                             GgufExtent from) {
  std::vector<GgufExtent> parts;
  parts.push_back(std::move(from));
  add_tensor_at(name, shape, type, std::move(parts));
}

void GgufFile::add_tensor_at(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                             std::vector<GgufExtent> parts) {
  const uint64_t want = check_tensor(name, shape, type);
  QS_ASSERT(!parts.empty() && shape[0] % int64_t(parts.size()) == 0, "tensor ", name, ": ", parts.size(),
            " parts for ", shape[0], " slices");
  const int64_t slices = shape[0] / int64_t(parts.size());
  for (const GgufExtent& p : parts) {
    QS_ASSERT(p.order.empty() || int64_t(p.order.size()) == slices, "tensor ", name, ": an order of ",
              p.order.size(), " for ", slices, " slices");
    for (const int64_t i : p.order) QS_ASSERT(i >= 0 && i < slices, "tensor ", name, ": slice ", i);
  }
  tensors_.push_back({name, shape, type, want, {}, std::move(parts)});
}

void GgufFile::write(const std::string& path, bool kernel_copy) const {
  std::string head;
  put<uint32_t>(head, 0x46554747u);  // "GGUF"
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, n_kv_);
  head += kv_;
  uint64_t offset = 0;
  for (const Info& t : tensors_) {
    put_str(head, t.name);
    put<uint32_t>(head, uint32_t(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put<uint64_t>(head, uint64_t(*it));
    put<uint32_t>(head, uint32_t(t.type));
    put<uint64_t>(head, offset);
    offset = pad_to(offset + t.bytes);
  }
  head.resize(pad_to(head.size()), '\0');

  const std::string tmp = temp_path_for(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) io_fail(errno, "creating", tmp);
  try {
    write_all(fd, head.data(), head.size(), tmp);
    write_data(fd, tmp, kernel_copy);
    if (::fsync(fd) != 0) io_fail(errno, "syncing", tmp);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    io_fail(err, "closing", tmp);
  }
  rename_into_place(tmp, path);
}

// Every tensor's bytes in tensor-info order, each padded to the alignment; bytes left in
// files are copied part by part, slice run by slice run (a run: consecutive stored slices).
void GgufFile::write_data(int fd, const std::string& tmp, bool kernel_copy) const {
  const char zeros[kAlignment] = {};
  Fds sources;
  for (const Info& t : tensors_) {
    if (t.parts.empty()) write_all(fd, t.data.data(), t.bytes, tmp);
    const uint64_t part = t.parts.empty() ? 0 : t.bytes / t.parts.size();
    for (const GgufExtent& e : t.parts) {
      const int src = sources.get(e.path);
      if (e.order.empty()) {
        copy_file_bytes(src, e.offset, fd, part, e.path, tmp, kernel_copy);
        continue;
      }
      const uint64_t slice = part / e.order.size();
      for (size_t i = 0; i < e.order.size();) {
        size_t j = i + 1;
        while (j < e.order.size() && e.order[j] == e.order[j - 1] + 1) ++j;
        copy_file_bytes(src, e.offset + uint64_t(e.order[i]) * slice, fd, uint64_t(j - i) * slice, e.path, tmp,
                        kernel_copy);
        i = j;
      }
    }
    write_all(fd, zeros, pad_to(t.bytes) - t.bytes, tmp);
  }
}

void copy_file_bytes(int from, uint64_t offset, int to, uint64_t bytes, const std::string& from_path,
                     const std::string& to_path, bool kernel_copy) {
  while (kernel_copy && bytes > 0) {
    loff_t off = loff_t(offset);
    const size_t want = size_t(std::min<uint64_t>(bytes, uint64_t(1) << 30));
    const ssize_t n = ::copy_file_range(from, &off, to, nullptr, want, 0);
    if (n < 0 && errno == EINTR) continue;
    // Kernels before 5.3, filesystems across which (or on which) it cannot copy: the
    // plain copy below does the rest.
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)) break;
    if (n < 0) io_fail(errno, "copying into", to_path);
    if (n == 0) fail_input(from_path, ": ends before byte ", offset + bytes, " (was it changed or truncated "
                           "while the export ran? run the command again)");
    offset += uint64_t(n), bytes -= uint64_t(n);
  }
  std::vector<char> buf;
  while (bytes > 0) {
    const uint64_t n = std::min(bytes, kCopyChunk);
    buf.resize(size_t(n));
    pread_all(from, offset, buf.data(), n, from_path);
    write_all(to, buf.data(), n, to_path);
    offset += n, bytes -= n;
  }
}

GgufSpool::~GgufSpool() {
  if (fd_ >= 0) ::close(fd_);
}

uint64_t GgufSpool::append(const void* data, uint64_t bytes) {
  if (fd_ < 0) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) io_fail(errno, "creating", path_);
    size_ = 0;
  }
  const uint64_t at = size_;
  const char* p = static_cast<const char*>(data);
  for (uint64_t done = 0; done < bytes;) {
    const ssize_t w = ::pwrite(fd_, p + done, size_t(std::min<uint64_t>(bytes - done, uint64_t(1) << 30)),
                               off_t(at + done));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) io_fail(errno, "writing", path_);
    done += uint64_t(w);
  }
  size_ += bytes;
  return at;
}

void GgufSpool::read(uint64_t offset, void* out, uint64_t bytes) const {
  QS_ASSERT(fd_ >= 0 && offset + bytes <= size_, "spool read past its end: ", offset, "+", bytes);
  pread_all(fd_, offset, out, bytes, path_);
}

void GgufSpool::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) io_fail(errno, "closing", path_);
}

void GgufSpool::remove() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(path_.c_str());
}

}  // namespace qshard::exporting
