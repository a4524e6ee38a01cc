#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "quant/format.h"

using namespace qshard;

namespace {

std::string parse_error(const std::string& name, int64_t g, bool sym = true) {
  try {
    QuantFormat::parse(name, g, sym);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(QuantFormat, IntDefaultsAndNames) {
  for (int b = 2; b <= 8; ++b) {
    auto f = QuantFormat::parse("int" + std::to_string(b), 0, true);
    EXPECT_EQ(f.family, FormatFamily::Int);
    EXPECT_EQ(f.bits, b);
    EXPECT_EQ(f.group_size, 128);
    EXPECT_TRUE(f.symmetric);
    EXPECT_EQ(f.name(), "int" + std::to_string(b));
  }
  auto f = QuantFormat::parse("INT4", 64, false);
  EXPECT_EQ(f.describe(), "int4 g64 asym");
  EXPECT_TRUE(f.has_zero_point());
  EXPECT_EQ(QuantFormat::parse("int4", 0, true).describe(), "int4 g128 sym");
  auto pc = QuantFormat::parse("int8", -1, true);
  EXPECT_EQ(pc.group_width(4096), 4096);
  EXPECT_EQ(pc.n_groups(4096), 1);
  EXPECT_EQ(pc.describe(), "int8 per-channel sym");
  EXPECT_EQ(QuantFormat::parse("int3", 96, true).n_groups(4992), 52);
}

TEST(QuantFormat, MxAndNvDefaults) {
  for (int b : {8, 6, 4, 3}) {
    auto f = QuantFormat::parse("mxint" + std::to_string(b), 0, false);
    EXPECT_EQ(f.family, FormatFamily::MXInt);
    EXPECT_EQ(f.bits, b);
    EXPECT_EQ(f.group_size, 32);
    EXPECT_TRUE(f.symmetric);
    EXPECT_FALSE(f.has_zero_point());
    for (int g : {16, 32, 128}) EXPECT_EQ(QuantFormat::parse(f.name(), g, true).group_size, g);
  }
  EXPECT_EQ(QuantFormat::parse("mxint4", 128, true).describe(), "mxint4 b128");
  auto mx = QuantFormat::parse("mxfp4", 0, true);
  EXPECT_EQ(mx.family, FormatFamily::MXFP4);
  EXPECT_EQ(mx.group_size, 32);
  EXPECT_EQ(mx.describe(), "mxfp4 b32");
  EXPECT_EQ(QuantFormat::parse("mxfp4", 32, true).group_size, 32);
  auto nv = QuantFormat::parse("nvfp4", 0, true);
  EXPECT_EQ(nv.family, FormatFamily::NVFP4);
  EXPECT_EQ(nv.group_size, 16);
  EXPECT_EQ(nv.bits, 4);
  EXPECT_EQ(nv.describe(), "nvfp4 b16");
  EXPECT_EQ(QuantFormat::parse("nvfp4", 16, true).n_groups(64), 4);
}

TEST(QuantFormat, ErrorsNameTheOptionAndAllowedValues) {
  for (const char* bad : {"int1", "int9", "int16", "fp4", "", "mxint5", "mxfp8", "nvfp8"}) {
    const std::string e = parse_error(bad, 0);
    EXPECT_NE(e.find("--format"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("nvfp4"), std::string::npos) << e;
  }
  std::string e = parse_error("int4", -2);
  EXPECT_NE(e.find("--group-size"), std::string::npos) << e;
  EXPECT_NE(e.find("-1"), std::string::npos) << e;
  e = parse_error("mxint8", 64);
  EXPECT_NE(e.find("--group-size"), std::string::npos) << e;
  EXPECT_NE(e.find("16, 32"), std::string::npos) << e;
  for (int g : {16, 64, 128, -1}) {
    e = parse_error("mxfp4", g);
    EXPECT_NE(e.find("--group-size"), std::string::npos) << e;
    EXPECT_NE(e.find("32"), std::string::npos) << e;
  }
  for (int g : {8, 32, -1}) {
    e = parse_error("nvfp4", g);
    EXPECT_NE(e.find("--group-size"), std::string::npos) << e;
    EXPECT_NE(e.find("16"), std::string::npos) << e;
  }
}

TEST(QuantFormat, CheckDividesNamesTheTensor) {
  auto f = QuantFormat::parse("int4", 128, true);
  EXPECT_NO_THROW(f.check_divides(4096, "w"));
  try {
    f.check_divides(4000, "model.layers.0.mlp.down_proj");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("model.layers.0.mlp.down_proj"), std::string::npos) << m;
    EXPECT_NE(m.find("4000"), std::string::npos) << m;
    EXPECT_NE(m.find("--group-size"), std::string::npos) << m;
  }
  EXPECT_NO_THROW(QuantFormat::parse("int4", -1, true).check_divides(4001, "w"));
  EXPECT_THROW(QuantFormat::parse("nvfp4", 0, true).check_divides(40, "w"), InputError);
  EXPECT_THROW(QuantFormat::parse("int4", -1, true).check_divides(0, "w"), InputError);
}

TEST(QuantFormat, SuggestedGroupSizesDivideEveryMatrix) {
  const auto int4 = QuantFormat::parse("int4", 288, true);
  // SmolLM2-135M: hidden 576, intermediate 1536. 288 divides 576, not 1536.
  EXPECT_EQ(common_group_sizes(int4, {576, 1536, 576}), (std::vector<int64_t>{192, 96, 64, 48, 32, 24}));
  EXPECT_EQ(common_group_sizes(int4, {4096, 11008}), (std::vector<int64_t>{256, 128, 64, 32, 16, 8}));
  // The largest power of two stays listed even when larger odd multiples fill the list.
  EXPECT_EQ(common_group_sizes(int4, {3360}), (std::vector<int64_t>{3360, 1680, 1120, 840, 672, 32}));
  EXPECT_EQ(common_group_sizes(QuantFormat::parse("mxint8", 128, true), {576, 1536}), (std::vector<int64_t>{32, 16}));
  EXPECT_TRUE(common_group_sizes(QuantFormat::parse("mxfp4", 0, true), {40}).empty());
  try {
    int4.check_divides(1536, "model.layers.0.mlp.down_proj.weight", {576, 576, 1536});
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("every quantized matrix (576, 1536): 192, 96, 64, 48, 32 or 24, or -1 for per-channel"),
              std::string::npos) << m;
  }
  try {
    QuantFormat::parse("mxfp4", 0, true).check_divides(40, "w", {40});
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no block size of mxfp4 divides"), std::string::npos) << e.what();
  }
}
