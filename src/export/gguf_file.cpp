#include "export/gguf_file.h"

#include <cstring>
#include <fstream>
#include <limits>

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

void GgufFile::add_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                          std::vector<uint8_t> data) {
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
  const uint64_t want = ggml_row_bytes(type, shape.back()) * uint64_t(n / shape.back());
  QS_ASSERT(data.size() == want, "tensor ", name, ": ", data.size(), " bytes, expected ", want);
  tensors_.push_back({name, shape, type, std::move(data)});
}

void GgufFile::write(const std::string& path) const {
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
    offset = pad_to(offset + t.data.size());
  }
  head.resize(pad_to(head.size()), '\0');

  const std::string tmp = temp_path_for(path);
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail_input(tmp, ": cannot create (check that --out is writable)");
    f.write(head.data(), std::streamsize(head.size()));
    const std::string zeros(kAlignment, '\0');
    for (const Info& t : tensors_) {
      f.write(reinterpret_cast<const char*>(t.data.data()), std::streamsize(t.data.size()));
      f.write(zeros.data(), std::streamsize(pad_to(t.data.size()) - t.data.size()));
    }
    f.flush();
    if (!f) fail_input(tmp, ": write failed (disk full?)");
  }
  fsync_file(tmp);
  rename_into_place(tmp, path);
}

}  // namespace qshard::exporting
