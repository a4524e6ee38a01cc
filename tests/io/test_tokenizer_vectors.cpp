// llama.cpp's tokenizer test vectors (models/ggml-vocab-NAME.gguf.inp/.out, made by
// convert_hf_to_gguf_update.py from the original Hugging Face tokenizers with
// add_special_tokens=False) against our tokenizer.json reader, on the tokenizer.json files
// tools/gguf_vocab_to_tokenizer_json.py rebuilds from the GGUF vocabularies.
// QSHARD_TOKENIZER_JSON_DIR overrides where those are (default QSHARD_VOCAB_DIR/tokenizer-json).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "io/json_file.h"
#include "io/tokenizer.h"

namespace {

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

std::string json_dir() {
  if (const char* env = std::getenv("QSHARD_TOKENIZER_JSON_DIR")) return env;
  return std::string(QSHARD_VOCAB_DIR) + "/tokenizer-json";
}

// test-tokenizer-0.cpp's read_tests: inputs separated by "\n__ggml_vocab_test__\n", one
// line of space-separated ids per input.
std::vector<Case> read_cases(const std::string& base) {
  const std::string inp = qshard::read_text_file(base + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Case> cases;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t next = inp.find(sep, pos);
    cases.push_back(
        {inp.substr(pos, next == std::string::npos ? std::string::npos : next - pos), {}});
    if (next == std::string::npos) break;
    pos = next + sep.size();
  }
  std::istringstream out(qshard::read_text_file(base + ".out"));
  size_t i = 0;
  for (std::string line; std::getline(out, line); ++i) {
    if (i >= cases.size()) break;
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) cases[i].ids.push_back(id);
  }
  EXPECT_EQ(i, cases.size()) << base << ": .inp and .out differ in length";
  return cases;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (const int32_t id : ids) (s += ' ') += std::to_string(id);
  return s;
}

class TokenizerVectors : public testing::TestWithParam<const char*> {};

TEST_P(TokenizerVectors, MatchesHuggingFace) {
  const std::string name = GetParam();
  const std::string dir = json_dir() + "/" + name;
  const std::string base = std::string(QSHARD_VOCAB_DIR) + "/ggml-vocab-" + name + ".gguf";
  ASSERT_TRUE(qshard::path_exists(dir + "/tokenizer.json") && qshard::path_exists(base + ".inp"))
      << dir << "/tokenizer.json or " << base << ".inp is missing: run launch/fetch_testdata.sh";
  const auto tok = qshard::Tokenizer::load(dir);
  EXPECT_NE(tok->describe().find("tokenizer.json"), std::string::npos) << tok->describe();
  int failures = 0;
  for (const Case& c : read_cases(base)) {
    const auto ids = tok->encode(c.text);
    if (ids != c.ids && ++failures <= 10)
      ADD_FAILURE() << name << " input \"" << c.text << "\"\n  want" << show(c.ids) << "\n  got "
                    << show(ids);
  }
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Vocab, TokenizerVectors,
                         testing::Values("llama-bpe", "qwen2", "qwen35", "gpt-2", "deepseek-llm",
                                         "deepseek-coder", "starcoder", "command-r", "phi-3",
                                         "llama-spm"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
