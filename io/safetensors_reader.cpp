// Reading safetensors: every header field is checked before any pointer into the
// mapping is handed out, because checkpoints come from the internet.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

namespace qshard {

namespace {

// The Rust reference rejects headers over 100 MB; real ones are well under 1 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kCorrupt = ": the file is truncated or corrupt; re-download or re-export it";
constexpr const char* kIndexName = "model.safetensors.index.json";

template <class... Parts>
[[noreturn]] void corrupt(const std::string& path, Parts&&... parts) {
  fail_input(path, ": ", std::forward<Parts>(parts)..., kCorrupt);
}

std::string known_dtypes() {
  std::string s;
  for (DType t : {DType::BF16, DType::F16, DType::F32, DType::F64, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::BOOL, DType::F8_E4M3})
  {
    if (!s.empty()) s += ", ";
    s += dtype_name(t);
  }
  return s;
}

// Non-negative JSON integers parse as number_unsigned; negatives and floats do not.
std::optional<uint64_t> as_u64(const nlohmann::ordered_json& j) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  return std::nullopt;
}

SafetensorsFile::TensorInfo parse_entry(const std::string& path, const std::string& name,
                                        const nlohmann::ordered_json& e, uint64_t data_size) {
  SafetensorsFile::TensorInfo t;
  t.name = name;
  if (!e.is_object()) corrupt(path, "header entry for tensor '", name, "' is not an object");

  auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string())
    corrupt(path, "tensor '", name, "' has no \"dtype\" string");
  const auto& dname = dt->get_ref<const std::string&>();
  auto dtype = dtype_from_name(dname);
  if (!dtype)
    fail_input(path, ": tensor '", name, "' has dtype '", dname, "', which qshard does not read (",
               known_dtypes(), "): convert the checkpoint to one of those dtypes");
  t.dtype = *dtype;

  auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array())
    corrupt(path, "tensor '", name, "' has no \"shape\" array");
  // Products of any subset of dims must fit int64 (consumers multiply dims freely),
  // so zero dims do not excuse huge ones.
  uint64_t nonzero_product = 1;
  bool has_zero = false;
  for (const auto& d : *sh) {
    auto v = as_u64(d);
    if (!v || *v > uint64_t(std::numeric_limits<int64_t>::max()))
      corrupt(path, "tensor '", name, "' has shape ", sh->dump(),
              ", whose entries must be non-negative integers");
    if (*v == 0) {
      has_zero = true;
    } else {
      if (nonzero_product > uint64_t(std::numeric_limits<int64_t>::max()) / *v)
        corrupt(path, "tensor '", name, "' has shape ", sh->dump(), ", whose size overflows");
      nonzero_product *= *v;
    }
    t.shape.push_back(int64_t(*v));
  }
  const uint64_t numel = has_zero ? 0 : nonzero_product;
  const uint64_t elem = dtype_size(t.dtype);
  if (numel > uint64_t(std::numeric_limits<int64_t>::max()) / elem)
    corrupt(path, "tensor '", name, "' has shape ", sh->dump(), ", whose byte size overflows");

  auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0]) ||
      !as_u64((*off)[1]))
    corrupt(path, "tensor '", name, "' needs \"data_offsets\": [begin, end] with integers >= 0");
  t.begin = *as_u64((*off)[0]);
  t.end = *as_u64((*off)[1]);
  if (t.begin > t.end)
    corrupt(path, "tensor '", name, "' has data_offsets [", t.begin, ", ", t.end,
            "] with begin after end");
  if (t.end > data_size)
    corrupt(path, "tensor '", name, "' has data_offsets [", t.begin, ", ", t.end,
            "] past the end of the data region (", data_size, " bytes)");
  if (t.end - t.begin != numel * elem)
    corrupt(path, "tensor '", name, "' is ", dname, " ", shape_str(t.shape), " = ", numel * elem,
            " bytes, but its data_offsets [", t.begin, ", ", t.end, "] span ", t.end - t.begin);
  return t;
}

}  // namespace

struct SafetensorsFile::Mapping {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (addr != MAP_FAILED) ::munmap(addr, size);
  }
};

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    fail_input("cannot open ", path, ": ", std::strerror(errno),
               ": check the path and that it is readable");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_input(path, " is not a regular file: pass a .safetensors file");
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    corrupt(path, "it is ", size, " bytes, shorter than the 8-byte header length");
  }
  f.map_ = std::make_shared<Mapping>();
  f.map_->addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file open
  if (f.map_->addr == MAP_FAILED)
    fail_input("cannot mmap ", path, ": ", std::strerror(map_errno),
               ": check free address space and that the filesystem supports mmap");
  f.map_->size = size;
  const auto* base = static_cast<const uint8_t*>(f.map_->addr);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | base[i];
  if (header_len > kMaxHeaderBytes)
    corrupt(path, "it declares a ", header_len, "-byte header (over 100 MB), so it is not a "
                  "safetensors file");
  if (header_len > size - 8)
    corrupt(path, "it declares a ", header_len, "-byte header but has only ", size - 8,
            " bytes after the length");
  const uint64_t data_size = size - 8 - header_len;
  f.data_ = base + 8 + header_len;

  nlohmann::ordered_json header;
  // JSON parsers keep one of two equal keys silently; a tensor named twice is an error.
  std::set<std::string> keys;
  std::string duplicate;
  const auto note_keys = [&](int depth, nlohmann::ordered_json::parse_event_t event,
                             nlohmann::ordered_json& parsed) {
    if (depth == 1 && event == nlohmann::ordered_json::parse_event_t::key && duplicate.empty() &&
        !keys.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  try {
    header = nlohmann::ordered_json::parse(base + 8, base + 8 + header_len, note_keys);
  } catch (const nlohmann::json::exception& e) {
    corrupt(path, "its header is not valid JSON (", e.what(), ")");
  }
  if (!duplicate.empty()) corrupt(path, "its header names tensor '", duplicate, "' more than once");
  if (!header.is_object()) corrupt(path, "its header is JSON but not an object");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) corrupt(path, "\"__metadata__\" is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          corrupt(path, "\"__metadata__\" entry '", mk, "' is not a string");
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    f.tensors_.push_back(parse_entry(path, key, value, data_size));
  }

  // The spec requires the tensors to tile the data region exactly: no overlap (two
  // tensors aliasing bytes) and no gaps (bytes nobody accounts for).
  std::stable_sort(f.tensors_.begin(), f.tensors_.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : f.tensors_) {
    if (t.begin < expected)
      corrupt(path, "tensors '", prev->name, "' and '", t.name, "' overlap (data_offsets [",
              prev->begin, ", ", prev->end, "] and [", t.begin, ", ", t.end, "])");
    if (t.begin > expected)
      corrupt(path, "bytes [", expected, ", ", t.begin, ") of the data region belong to no tensor ",
              "(gap before '", t.name, "')");
    expected = t.end;
    prev = &t;
  }
  if (expected != data_size)
    corrupt(path, "the tensors cover ", expected, " bytes of a ", data_size,
            "-byte data region");
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.by_name_.emplace(f.tensors_[i].name, i);
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& t : tensors_) out.push_back(t.name);
  return out;
}

const SafetensorsFile::TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) fail_input("tensor '", name, "' is not in ", path_);
  return tensors_[it->second];
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo& t = info(name);
  const uint8_t* p = data_ + t.begin;
  const size_t bytes = size_t(t.end - t.begin);
  if (bytes != 0 && reinterpret_cast<uintptr_t>(p) % dtype_size(t.dtype) != 0) {
    Tensor copy = Tensor::zeros(t.dtype, t.shape);
    std::memcpy(copy.raw(), p, bytes);
    return copy;
  }
  // const_cast: Tensor has no read-only flavour; the PROT_READ mapping enforces it.
  return Tensor::view(t.dtype, t.shape, const_cast<uint8_t*>(p), map_, Device::Host);
}

void SafetensorsFile::release(const std::string& name) const {
  const TensorInfo& t = info(name);
  const auto page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data_ + t.begin) + page - 1) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(data_ + t.end) / page * page;
  // Only whole pages of this tensor: a neighbour sharing an edge page keeps it.
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// ---- TensorStore ----

namespace {

std::string join(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

// Shard names come from a downloaded file: refuse anything that leaves the directory.
bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

nlohmann::json read_index(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_input("cannot read ", path, ": ", std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail_input(path, ": not valid JSON (", e.what(), "): re-download it");
  }
}

}  // namespace

TensorStore TensorStore::open_file(const std::string& path) {
  TensorStore s;
  s.location_ = path;
  s.shards_.push_back(SafetensorsFile::open(path));
  s.names_ = s.shards_[0].names();
  for (const auto& n : s.names_) s.shard_index_.emplace(n, 0);
  return s;
}

TensorStore TensorStore::open(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(dir, ec)) return open_file(dir);
  if (!fs::is_directory(dir, ec))
    fail_input(dir, " is not a directory: pass the checkpoint directory (the one with "
                    "config.json and the .safetensors files)");
  const std::string index_path = join(dir, kIndexName);
  if (!fs::exists(index_path, ec)) {
    const std::string single = join(dir, "model.safetensors");
    if (fs::exists(single, ec)) {
      TensorStore s = open_file(single);
      s.location_ = dir;
      return s;
    }
    fail_input("no safetensors weights in ", dir, ": expected model.safetensors or ", kIndexName,
               " (.bin/.pt checkpoints must be converted to safetensors first)");
  }

  const nlohmann::json index = read_index(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail_input(index_path, ": has no \"weight_map\" object: re-download it");
  TensorStore s;
  s.location_ = dir;
  std::map<std::string, size_t> shard_ids;  // file name -> shards_ index, sorted by name
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string())
      fail_input(index_path, ": weight_map entry for '", tensor, "' is not a file name string: "
                 "re-download it");
    const auto& name = file.get_ref<const std::string&>();
    if (!plain_file_name(name))
      fail_input(index_path, ": maps tensor '", tensor, "' to '", name, "', which is not a plain "
                 "file name in ", dir, "; refusing to read outside the checkpoint directory");
    shard_ids.emplace(name, 0);
  }
  for (auto& [name, id] : shard_ids) {
    const std::string path = join(dir, name);
    if (!fs::exists(path, ec))
      fail_input(index_path, " names shard '", name, "', which is missing from ", dir,
                 ": the download is incomplete; fetch the missing file");
    id = s.shards_.size();
    s.shards_.push_back(SafetensorsFile::open(path));
  }
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    const size_t id = shard_ids.at(file.get<std::string>());
    if (!s.shards_[id].contains(tensor))
      fail_input(index_path, " says tensor '", tensor, "' is in ", s.shards_[id].path(),
                 ", but that file does not contain it: the index and shards are from different "
                 "checkpoints; re-download them");
    s.shard_index_.emplace(tensor, id);
  }
  // Tensors a shard holds but the index does not list are ignored, as transformers does.
  for (size_t id = 0; id < s.shards_.size(); ++id)
    for (auto& n : s.shards_[id].names()) {
      auto it = s.shard_index_.find(n);
      if (it != s.shard_index_.end() && it->second == id) s.names_.push_back(std::move(n));
    }
  return s;
}

const SafetensorsFile& TensorStore::shard_of(const std::string& name) const {
  auto it = shard_index_.find(name);
  if (it == shard_index_.end())
    fail_input("tensor '", name, "' is not in the checkpoint ", location_, " (which has ",
               names_.size(), " tensors", names_.empty() ? "" : ", e.g. '",
               names_.empty() ? "" : names_.front(), names_.empty() ? "" : "'",
               "): the checkpoint may be of another architecture than expected, or incomplete");
  return shards_[it->second];
}

bool TensorStore::contains(const std::string& name) const { return shard_index_.count(name) != 0; }
Tensor TensorStore::get(const std::string& name) const { return shard_of(name).get(name); }
void TensorStore::release(const std::string& name) const { shard_of(name).release(name); }
std::vector<std::string> TensorStore::names() const { return names_; }
const TensorStore::TensorInfo& TensorStore::info(const std::string& name) const {
  return shard_of(name).info(name);
}

}  // namespace qshard
