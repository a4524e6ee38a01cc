#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace qshard {

namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
  bool is_float;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::BF16, "BF16", 2, true}, {DType::F16, "F16", 2, true},
    {DType::F32, "F32", 4, true},   {DType::F64, "F64", 8, true},
    {DType::I64, "I64", 8, false},  {DType::I32, "I32", 4, false},
    {DType::I16, "I16", 2, false},  {DType::I8, "I8", 1, false},
    {DType::U8, "U8", 1, false},    {DType::BOOL, "BOOL", 1, false},
    {DType::F8_E4M3, "F8_E4M3", 1, true},
};
const DTypeInfo& info(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d;
  QS_ASSERT(false, "unknown dtype enum");
}
}  // namespace

size_t dtype_size(DType t) { return info(t).size; }
std::string_view dtype_name(DType t) { return info(t).name; }
bool dtype_is_float(DType t) { return info(t).is_float; }

std::optional<DType> dtype_from_name(std::string_view s) {
  for (const auto& d : kDTypes)
    if (d.name == s) return d.type;
  return std::nullopt;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    u = sign;
  } else {  // subnormal: renormalize
    exp = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return sign | 0x7e00u;          // NaN
  if (absu >= 0x477ff000u) return sign | 0x7c00u;         // overflow to inf (after rounding)
  if (absu < 0x38800000u) {                               // subnormal or zero in f16
    if (absu < 0x33000000u) return sign;                  // below half the smallest subnormal
    const uint32_t e = absu >> 23;
    const uint32_t m = (absu & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;                        // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return sign | uint16_t(r);
  }
  uint32_t r = absu - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return sign | uint16_t(r >> 13);
}

float f8e4m3_to_f32(uint8_t v) {
  // E4M3FN: bias 7, no infinities, S.1111.111 is NaN.
  const bool neg = v & 0x80u;
  const int exp = (v >> 3) & 0xf;
  const int mant = v & 0x7;
  float r;
  if (exp == 0xf && mant == 0x7)
    r = std::nanf("");
  else if (exp == 0)
    r = std::ldexp(float(mant), -9);
  else
    r = std::ldexp(1.0f + float(mant) / 8.0f, exp - 7);
  return neg ? -r : r;
}

namespace {
template <class T, class F>
void map_to_f32(const void* data, float* out, size_t n, F f) {
  const auto* p = static_cast<const T*>(data);
  for (size_t i = 0; i < n; ++i) out[i] = f(p[i]);
}
template <class T>
void cast_to_f32(const void* data, float* out, size_t n) {
  map_to_f32<T>(data, out, n, [](T x) { return float(x); });
}
}  // namespace

void convert_to_f32(DType src, const void* data, float* out, size_t n) {
  if (n == 0) return;  // data/out may be null for empty tensors
  switch (src) {
    case DType::F32: std::memcpy(out, data, n * 4); return;
    case DType::BF16: map_to_f32<uint16_t>(data, out, n, bf16_to_f32); return;
    case DType::F16: map_to_f32<uint16_t>(data, out, n, f16_to_f32); return;
    case DType::F8_E4M3: map_to_f32<uint8_t>(data, out, n, f8e4m3_to_f32); return;
    case DType::F64: cast_to_f32<double>(data, out, n); return;
    case DType::I64: cast_to_f32<int64_t>(data, out, n); return;
    case DType::I32: cast_to_f32<int32_t>(data, out, n); return;
    case DType::I16: cast_to_f32<int16_t>(data, out, n); return;
    case DType::I8: cast_to_f32<int8_t>(data, out, n); return;
    case DType::U8:
    case DType::BOOL: cast_to_f32<uint8_t>(data, out, n); return;
  }
  QS_ASSERT(false, "unhandled dtype in convert_to_f32");
}

}  // namespace qshard
