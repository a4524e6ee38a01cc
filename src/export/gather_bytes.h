// A rank's list as bytes for an allgather (export/shard_output.cpp, gguf_stream.cpp):
// little-endian u64s and length-prefixed strings, read back bounds-checked. Internal to
// src/export.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"

namespace qshard::exporting {

inline void put_u64(std::vector<uint8_t>& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(uint8_t(v >> (8 * i)));
}

inline void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put_u64(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

// `what` names the list in the error a truncated one gives.
struct GatherReader {
  const std::vector<uint8_t>& b;
  const char* what;
  size_t pos = 0;
  uint64_t u64() {
    QS_ASSERT(pos + 8 <= b.size(), "truncated ", what);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t(b[pos + size_t(i)]) << (8 * i);
    pos += 8;
    return v;
  }
  std::string str() {
    const uint64_t n = u64();
    QS_ASSERT(pos + n <= b.size(), "truncated ", what);
    std::string s(reinterpret_cast<const char*>(b.data() + pos), size_t(n));
    pos += size_t(n);
    return s;
  }
};

}  // namespace qshard::exporting
