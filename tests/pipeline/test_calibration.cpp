#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "core/error.h"
#include "pipeline/calibration.h"

using namespace qshard;

namespace {
std::vector<int32_t> iota_stream(int n) {
  std::vector<int32_t> s(n);
  for (int i = 0; i < n; ++i) s[i] = i;
  return s;
}
}  // namespace

TEST(Calibration, ConsecutiveWindowsFromTheStart) {
  CalibrationOptions o;
  o.n_samples = 3;
  o.seqlen = 4;
  const auto set = make_calibration_windows(iota_stream(14), o);
  EXPECT_EQ(set.n_samples, 3);
  EXPECT_EQ(set.tokens, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
}

// A long run must not quietly calibrate on fewer windows than it was asked for.
TEST(Calibration, FewerWindowsThanAskedIsAnError) {
  CalibrationOptions o;
  o.path = "calib.txt";
  o.n_samples = 10;
  o.seqlen = 4;
  try {
    make_calibration_windows(iota_stream(9), o);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("calib.txt: 9 tokens, too few for --n-calib 10 x --calib-seqlen 4"),
              std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("at most 2 here"), std::string::npos) << e.what();
  }
  o.n_samples = 2;
  EXPECT_EQ(make_calibration_windows(iota_stream(9), o).n_samples, 2);
  o.seqlen = 20;
  EXPECT_THROW(make_calibration_windows(iota_stream(9), o), InputError);
  // Shuffled windows overlap: any n from a stream of at least one window.
  o.seqlen = 4;
  o.n_samples = 10;
  o.shuffle_seed = 1;
  EXPECT_EQ(make_calibration_windows(iota_stream(9), o).n_samples, 10);
}

TEST(Calibration, TokenIdsOutsideTheVocabularyNameTheFile) {
  EXPECT_NO_THROW(check_token_ids({0, 5, 9}, 10, "a.tokens"));
  try {
    check_token_ids({0, 5, 10, 3}, 10, "a.tokens");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("a.tokens: token 2 is 10, outside the model's vocabulary of 10"),
              std::string::npos) << e.what();
  }
}

TEST(Calibration, ShuffleIsSeededAndInBounds) {
  CalibrationOptions o;
  o.n_samples = 50;
  o.seqlen = 8;
  o.shuffle_seed = 7;
  const auto a = make_calibration_windows(iota_stream(100), o);
  const auto b = make_calibration_windows(iota_stream(100), o);
  EXPECT_EQ(a.tokens, b.tokens);  // deterministic for a seed
  ASSERT_EQ(a.tokens.size(), 400u);
  for (int w = 0; w < 50; ++w) {
    const int32_t s = a.tokens[w * 8];
    EXPECT_LE(s, 92);
    for (int t = 1; t < 8; ++t) EXPECT_EQ(a.tokens[w * 8 + t], s + t);  // contiguous windows
  }
  o.shuffle_seed = 8;
  EXPECT_NE(make_calibration_windows(iota_stream(100), o).tokens, a.tokens);
}

TEST(Calibration, TokenFiles) {
  const std::string path = testing::TempDir() + "/calib.tokens";
  {
    std::ofstream f(path, std::ios::binary);
    const int32_t ids[3] = {1, 500, 2};
    f.write(reinterpret_cast<const char*>(ids), sizeof ids);
    f.write("x", 1);  // a torn last id
  }
  EXPECT_TRUE(is_token_file(path));
  EXPECT_FALSE(is_token_file("calib.txt"));
  EXPECT_THROW(read_token_file(path), InputError);
  {
    std::ofstream f(path, std::ios::binary);
    const int32_t ids[3] = {1, 500, 2};
    f.write(reinterpret_cast<const char*>(ids), sizeof ids);
  }
  EXPECT_EQ(read_token_file(path), (std::vector<int32_t>{1, 500, 2}));
  std::remove(path.c_str());
}
