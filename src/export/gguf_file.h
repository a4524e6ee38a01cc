// A GGUF v3 file (formats.md E.1, read against ggml's gguf.cpp and gguf-py): key/value
// metadata, then tensor infos, then the tensors' data, each aligned to 32 bytes. Built in
// memory and written once by write(), so a file under its final name is always whole.
// Internal to src/export.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qshard::exporting {

// ggml_type values (ggml.h) of the types qshard writes.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, IQ4_NL = 20, IQ4_XS = 23, BF16 = 30,
};
const char* ggml_type_name(GgmlType t);
// Bytes of one row of `n` elements (n a multiple of the type's block size).
uint64_t ggml_row_bytes(GgmlType t, int64_t n);

class GgufFile {
 public:
  void set_string(const std::string& key, const std::string& v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_strings(const std::string& key, const std::vector<std::string>& v);
  void set_f32s(const std::string& key, const std::vector<float>& v);
  void set_i32s(const std::string& key, const std::vector<int32_t>& v);

  // shape in PyTorch order ([out, in]); GGUF stores ne = reversed. `data` is the tensor's
  // bytes in the type's layout, rows of ggml_row_bytes(type, shape.back()).
  void add_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                  std::vector<uint8_t> data);
  // Writes the whole file to `path` (via a temporary name, fsynced, renamed).
  void write(const std::string& path) const;

 private:
  struct Info {
    std::string name;
    std::vector<int64_t> shape;
    GgmlType type;
    std::vector<uint8_t> data;
  };
  std::string kv_;  // the encoded key/value pairs
  uint64_t n_kv_ = 0;
  std::vector<Info> tensors_;
};

}  // namespace qshard::exporting
