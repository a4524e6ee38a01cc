// Replays the fuzz corpus and every crash input kept in fuzz/regressions/ through the
// same entry points the libFuzzer binaries use (fuzz/targets), in the normal build and
// under the sanitizer build: a fixed crash stays fixed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/targets/targets.h"

namespace {

namespace fs = std::filesystem;

int replay(const std::string& target, int (*entry)(const uint8_t*, size_t)) {
  int files = 0;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = fs::path(QSHARD_SOURCE_DIR) / "fuzz" / kind / target;
    if (!fs::exists(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (!e.is_regular_file()) continue;
      std::ifstream in(e.path(), std::ios::binary);
      const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), {}};
      SCOPED_TRACE(e.path().string());
      EXPECT_EQ(entry(bytes.data(), bytes.size()), 0);
      ++files;
    }
  }
  return files;
}

TEST(FuzzReplay, SafetensorsHeader) { EXPECT_GT(replay("safetensors_header", qshard::fuzz::safetensors_header), 0); }
TEST(FuzzReplay, ModelSpec) { EXPECT_GT(replay("model_spec", qshard::fuzz::model_spec), 0); }
TEST(FuzzReplay, TokenFile) { EXPECT_GT(replay("token_file", qshard::fuzz::token_file), 0); }
TEST(FuzzReplay, TokenizerJson) { EXPECT_GT(replay("tokenizer_json", qshard::fuzz::tokenizer_json), 0); }
TEST(FuzzReplay, Recipe) { EXPECT_GT(replay("recipe", qshard::fuzz::recipe), 0); }

}  // namespace
