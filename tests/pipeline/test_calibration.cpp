#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>

#include "core/error.h"
#include "io/tokenizer.h"
#include "pipeline/calibration.h"

using namespace qshard;

namespace {
std::vector<int32_t> iota_stream(int n) {
  std::vector<int32_t> s(n);
  for (int i = 0; i < n; ++i) s[i] = i;
  return s;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

// One id per byte, so the stream is easy to predict.
class ByteTokenizer final : public Tokenizer {
 public:
  explicit ByteTokenizer(int32_t bos) : bos_(bos) {}
  std::vector<int32_t> encode(std::string_view text) const override {
    return std::vector<int32_t>(text.begin(), text.end());
  }
  int32_t bos_id() const override { return bos_; }
  int64_t vocab_size() const override { return 256; }
  std::string describe() const override { return "bytes"; }

 private:
  int32_t bos_;
};
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

TEST(Calibration, WrittenTokenFilesReadBack) {
  const std::string path = testing::TempDir() + "/written.tokens";
  const std::vector<int32_t> ids = {1, 0, 31999, 128000, 7};
  write_token_file(path, ids);
  EXPECT_EQ(read_token_file(path), ids);
  std::ifstream f(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), 20u);
  EXPECT_EQ(bytes.substr(8, 4), std::string("\xff\x7c\x00\x00", 4));  // 31999, little-endian
  std::remove(path.c_str());
}

TEST(Calibration, TextInAFileNamedTokensIsRefused) {
  const std::string path = testing::TempDir() + "/text.tokens";
  write_bytes(path, "Plain text, twenty-eight b.\n");  // a multiple of 4 bytes, and no NUL
  const std::string e = error_of([&] { read_token_file(path); });
  EXPECT_NE(e.find("text.tokens: looks like text"), std::string::npos) << e;
  std::remove(path.c_str());
}

TEST(Calibration, TokenIdsAreNotReadAsText) {
  const std::string dir = testing::TempDir();
  EXPECT_NE(error_of([&] { read_text_input(dir + "/a.tokens", "FIX"); }).find("a.tokens: is a token file"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_text_input(dir + "/a.bin", "FIX"); }).find("FIX"), std::string::npos);
  write_bytes(dir + "/ids.dat", std::string("\x01\x00\x00\x00\x2a\x00\x00\x00", 8));
  const std::string e = error_of([&] { read_text_input(dir + "/ids.dat", "use --tokens"); });
  EXPECT_NE(e.find("ids.dat: is not UTF-8 text"), std::string::npos) << e;
  EXPECT_NE(e.find("use --tokens"), std::string::npos) << e;
  write_bytes(dir + "/latin1.txt", "caf\xe9 au lait");
  EXPECT_NE(error_of([&] { read_text_input(dir + "/latin1.txt", "x"); }).find("not UTF-8"), std::string::npos);
  // UTF-8 is text, also when the first KiB ends inside a character.
  const std::string utf8 = std::string(1023, 'a') + "\xc3\xa9 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
  write_bytes(dir + "/utf8.txt", utf8);
  EXPECT_EQ(read_text_input(dir + "/utf8.txt", "x"), utf8);
  // ...but not when the file itself ends there.
  write_bytes(dir + "/cut.txt", "caf\xc3");
  EXPECT_NE(error_of([&] { read_text_input(dir + "/cut.txt", "x"); }).find("not UTF-8"), std::string::npos);
  for (const char* f : {"/ids.dat", "/latin1.txt", "/utf8.txt", "/cut.txt"}) std::remove((dir + f).c_str());
}

TEST(Calibration, TokenStreamIsBosThenTheText) {
  EXPECT_EQ(token_stream(ByteTokenizer(1), "ab"), (std::vector<int32_t>{1, 'a', 'b'}));
  EXPECT_EQ(token_stream(ByteTokenizer(-1), "ab"), (std::vector<int32_t>{'a', 'b'}));  // no BOS
}
