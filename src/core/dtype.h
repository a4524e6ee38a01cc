// Element types as safetensors names them, and the scalar conversions every
// backend agrees on (round-to-nearest-even, as torch does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace qshard {

enum class DType : uint8_t { BF16, F16, F32, F64, I64, I32, I16, I8, U8, BOOL, F8_E4M3 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);                    // "BF16", "F8_E4M3", ...
std::optional<DType> dtype_from_name(std::string_view s);  // nullopt for unknown names
bool dtype_is_float(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float f8e4m3_to_f32(uint8_t v);

// Converts n elements of any numeric dtype to float.
void convert_to_f32(DType src, const void* data, float* out, size_t n);

}  // namespace qshard
