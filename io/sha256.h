// SHA-256 of bytes and files: the checksums in a resumable run's manifest (what was
// written is what is read back) and the identity of the inputs a run was planned from.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace qshard {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex_digest();  // finishes the hash; the object is spent afterwards

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const std::string& bytes);
// The first `max_bytes` bytes of a file (all of it by default); InputError naming the
// file if it cannot be read.
std::string sha256_file(const std::string& path, uint64_t max_bytes = UINT64_MAX);

}  // namespace qshard
