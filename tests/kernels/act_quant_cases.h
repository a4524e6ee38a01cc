// Inputs for the activation fake-quant tests, shared by the gtest and the sample writer
// that the Python (torch / numpy) check reads: seeded rows at very different magnitudes
// plus rows built to hit the corner cases (exact rounding ties, all zeros, one outlier,
// subnormals, a row whose length is not a multiple of the MX block).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace qshard::test {

inline constexpr int64_t kActRows = 40;
inline constexpr int64_t kActCols = 80;  // blocks of 32, 32 and 16

inline std::vector<float> act_quant_input() {
  std::mt19937_64 gen(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(size_t(kActRows * kActCols));
  for (int64_t r = 0; r < kActRows; ++r) {
    const float mag = std::ldexp(1.0f, int(r % 17) - 8);  // 2^-8 .. 2^8
    for (int64_t c = 0; c < kActCols; ++c) x[size_t(r * kActCols + c)] = mag * normal(gen);
  }
  auto row = [&x](int64_t r) { return x.data() + r * kActCols; };
  // int8 ties: amax 127 makes the step exactly 1, so k + 0.5 is a tie (RNE: to even).
  for (int64_t c = 0; c < kActCols; ++c) row(0)[c] = float(c % 9) - 4.5f;
  row(0)[7] = 127.0f;
  // MXINT8 ties: amax in [1, 2) gives E = 0, step 1/64; odd multiples of 1/128 are ties.
  for (int64_t c = 0; c < kActCols; ++c) row(1)[c] = float(2 * (c % 40) + 1 - 40) / 128.0f;
  for (int64_t b = 0; b < kActCols; b += 32) row(1)[b] = 1.0f;
  // All zeros; a single outlier; values of one sign; subnormal magnitudes.
  for (int64_t c = 0; c < kActCols; ++c) row(2)[c] = 0.0f;
  row(3)[40] = 3000.0f;
  for (int64_t c = 0; c < kActCols; ++c) row(4)[c] = std::fabs(row(4)[c]) + 0.25f;
  for (int64_t c = 0; c < kActCols; ++c) row(5)[c] = float(int(c) - 40) * 1e-40f;
  // Saturation corner: -amax maps to -127 (not -128) in int8; values straddling 2^E.
  for (int64_t c = 0; c < kActCols; ++c) row(6)[c] = (c % 2 ? -1.0f : 1.0f) * (1.0f + float(c) / 64.0f);
  return x;
}

}  // namespace qshard::test
