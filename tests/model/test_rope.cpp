#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "model/rope.h"

using namespace qshard;

namespace {
ModelSpec spec_with(RopeScaling rs, double theta = 500000.0, int64_t head_dim = 128) {
  ModelSpec s;
  s.head_dim = head_dim;
  s.rope_theta = theta;
  s.rope_scaling = rs;
  return s;
}
}  // namespace

TEST(Rope, DefaultInvFreq) {
  const auto inv = rope_inv_freq(spec_with({}, 10000.0, 64));
  ASSERT_EQ(inv.size(), 32u);
  EXPECT_FLOAT_EQ(inv[0], 1.0f);
  EXPECT_NEAR(inv[1], std::pow(10000.0, -2.0 / 64), 1e-7);
  EXPECT_NEAR(inv[31], std::pow(10000.0, -62.0 / 64), 1e-9);
}

TEST(Rope, Llama3ScalingBands) {
  RopeScaling rs;
  rs.type = RopeScaling::Type::Llama3;
  rs.factor = 8;
  rs.low_freq_factor = 1;
  rs.high_freq_factor = 4;
  rs.original_max_position_embeddings = 8192;
  const auto base = rope_inv_freq(spec_with({}));
  const auto scaled = rope_inv_freq(spec_with(rs));
  for (size_t i = 0; i < base.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / base[i];
    if (wavelen < 8192.0 / 4)  // high frequencies are kept
      EXPECT_EQ(scaled[i], base[i]) << i;
    else if (wavelen > 8192.0)  // low frequencies slowed by the factor
      EXPECT_NEAR(scaled[i], base[i] / 8, 1e-6 * base[i]) << i;
    else  // in between: interpolated, so strictly between the two
      EXPECT_TRUE(scaled[i] <= base[i] && scaled[i] >= base[i] / 8) << i;
  }
}

TEST(Rope, TablesAreCosSinOfPositionTimesFreq) {
  const ModelSpec s = spec_with({}, 10000.0, 8);
  const RopeTables t = make_rope_tables(s, 5);
  ASSERT_EQ(t.cos.shape(), (Shape{5, 4}));
  const auto inv = rope_inv_freq(s);
  for (int p = 0; p < 5; ++p)
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(t.cos.data<float>()[p * 4 + i], std::cos(p * double(inv[i])), 1e-6);
      EXPECT_NEAR(t.sin.data<float>()[p * 4 + i], std::sin(p * double(inv[i])), 1e-6);
    }
}
