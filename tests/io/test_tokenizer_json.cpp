// The tokenizer.json reader on small hand-written files (data/tokenizer/, written by
// make_tokenizer_cases.py, which also records in cases.json the ids the Hugging Face
// `tokenizers` package gives), the BOS rules, and every error path.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/json_file.h"
#include "io/tokenizer.h"
#include "io/tokenizer_json.h"
#include "io/utf8.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qshard::InputError;

const std::string kData = std::string(QSHARD_TEST_DATA) + "/tokenizer";

std::string unhex(const std::string& h) {
  std::string s;
  for (size_t i = 0; i + 1 < h.size(); i += 2) s += char(std::stoi(h.substr(i, 2), nullptr, 16));
  return s;
}

json load(const std::string& name) {
  return qshard::read_json_file(kData + "/" + name + "/tokenizer.json");
}

std::unique_ptr<qshard::Tokenizer> make(const json& j, const json& config = json()) {
  return qshard::make_json_tokenizer(j, config, "MODEL/tokenizer.json");
}

// The InputError message of building a tokenizer from `j` ("" if none).
std::string error_of(const json& j, const json& config = json()) {
  try {
    make(j, config);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerJson, MatchesHuggingFaceTokenizersOnEveryCase) {
  const json cases = qshard::read_json_file(kData + "/cases.json");
  ASSERT_GT(cases.size(), 50u);
  std::map<std::string, std::unique_ptr<qshard::Tokenizer>> toks;
  for (const auto& c : cases) {
    const std::string dir = c["dir"];
    if (!toks.count(dir)) toks[dir] = qshard::Tokenizer::load(kData + "/" + dir);
    const auto want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(toks[dir]->encode(unhex(c["hex"])), want)
        << dir << ": \"" << c["text"].get<std::string>() << "\"";
    // Again, now from the pre-token cache.
    EXPECT_EQ(toks[dir]->encode(unhex(c["hex"])), want) << dir << " (cached)";
  }
}

TEST(TokenizerJson, InvalidUtf8IsReplacedAsPythonDoes) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(qshard::sanitize_utf8("ok \xF0\x9F\xA6\x99"), "ok \xF0\x9F\xA6\x99");
  EXPECT_EQ(qshard::sanitize_utf8("\xE2\x82"), fffd);  // truncated: one
  EXPECT_EQ(qshard::sanitize_utf8("\xF0\x9F\xA6"), fffd);
  EXPECT_EQ(qshard::sanitize_utf8("\xED\xA0\x80"), fffd + fffd + fffd);             // surrogate
  EXPECT_EQ(qshard::sanitize_utf8("\xC0\xAF"), fffd + fffd);                        // overlong
  EXPECT_EQ(qshard::sanitize_utf8("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // > U+10FFFF
  EXPECT_EQ(qshard::sanitize_utf8("\xE0\x80"), fffd + fffd);
  EXPECT_EQ(qshard::sanitize_utf8("a\x80"
                                  "b"),
            "a" + fffd + "b");
  EXPECT_EQ(qshard::sanitize_utf8("\xE2\x82x\xE2\x82"), fffd + "x" + fffd);
}

TEST(TokenizerJson, VocabSizeBosAndDescription) {
  const auto bl = qshard::Tokenizer::load(kData + "/byte_level");
  EXPECT_EQ(bl->vocab_size(), 271);  // the added token 270 is past the model's vocab
  EXPECT_EQ(bl->bos_id(), -1);       // a ByteLevel post-processor adds nothing
  EXPECT_NE(bl->describe().find("byte-level BPE"), std::string::npos) << bl->describe();
  EXPECT_NE(bl->describe().find("byte_level/tokenizer.json, 271 tokens"), std::string::npos)
      << bl->describe();
  const auto l3 = qshard::Tokenizer::load(kData + "/llama3");
  EXPECT_EQ(l3->bos_id(), 272);  // TemplateProcessing inside a Sequence
  const auto spm = qshard::Tokenizer::load(kData + "/spm");
  EXPECT_EQ(spm->bos_id(), 1);
  EXPECT_EQ(spm->describe().find("byte-level"), std::string::npos) << spm->describe();
}

TEST(TokenizerJson, AddBosTokenInTokenizerConfigOverridesTheTemplate) {
  EXPECT_EQ(make(load("spm"), {{"add_bos_token", false}})->bos_id(), -1);
  EXPECT_EQ(make(load("spm"), {{"add_bos_token", true}})->bos_id(), 1);
  EXPECT_EQ(
      make(load("byte_level"), {{"add_bos_token", true}, {"bos_token", "<|endoftext|>"}})->bos_id(),
      270);
  EXPECT_EQ(make(load("byte_level"), {{"add_bos_token", true}, {"bos_token", {{"content", "he"}}}})
                ->bos_id(),
            256);
  EXPECT_EQ(make(load("byte_level"), {{"bos_token", "<|endoftext|>"}})->bos_id(), -1);
  const std::string e =
      error_of(load("byte_level"), {{"add_bos_token", true}, {"bos_token", "<nope>"}});
  EXPECT_NE(e.find("MODEL/tokenizer_config.json: /bos_token \"<nope>\" is not a token"),
            std::string::npos)
      << e;
}

TEST(TokenizerJson, LoadPrefersTokenizerJsonOverTokenizerModel) {
  const fs::path dir = fs::temp_directory_path() / ("qshard_tok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(fs::path(QSHARD_TEST_MODEL) / "tokenizer.model", dir / "tokenizer.model",
                fs::copy_options::overwrite_existing);
  EXPECT_NE(qshard::Tokenizer::load(dir.string())->describe().find("sentencepiece"),
            std::string::npos);
  fs::copy_file(kData + "/byte_level/tokenizer.json", dir / "tokenizer.json",
                fs::copy_options::overwrite_existing);
  EXPECT_NE(qshard::Tokenizer::load(dir.string())->describe().find("tokenizer.json"),
            std::string::npos);
  fs::remove_all(dir);
  try {
    qshard::Tokenizer::load(dir.string());
    FAIL() << "no tokenizer files, no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer.json or tokenizer.model"), std::string::npos)
        << e.what();
  }
}

// Each edit of a valid file, and the message it must give (file, JSON path, the problem).
struct Broken {
  const char* base;
  std::function<void(json&)> edit;
  const char* message;
};

TEST(TokenizerJson, EveryUnsupportedOrMalformedPartIsOneErrorNamingTheJsonPath) {
  const std::vector<Broken> cases = {
      {"llama3", [](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["type"] = "Punctuation"; },
       "MODEL/tokenizer.json: /pre_tokenizer/pretokenizers/1/type \"Punctuation\" is not supported "
       "by qshard "
       "(supported pre-tokenizers: Split, ByteLevel"},
      {"spm", [](json& j) { j["normalizer"]["normalizers"][0]["type"] = "BertNormalizer"; },
       "/normalizer/normalizers/0/type \"BertNormalizer\" is not supported by qshard (supported "
       "normalizers: NFC"},
      {"spm", [](json& j) { j["model"]["type"] = "WordPiece"; },
       "/model type \"WordPiece\" is not supported by qshard (supported models: BPE)"},
      {"spm",
       [](json& j) {
         j["post_processor"] = {{"type", "Foo"}};
       },
       "/post_processor/type \"Foo\" is not supported by qshard (supported post-processors: "
       "TemplateProcessing"},
      {"spm", [](json& j) { j["model"]["dropout"] = 0.1; },
       "/model/dropout is set: BPE dropout is random"},
      {"spm", [](json& j) { j["model"]["merges"][0] = "▁ zz"; },
       "/model/merges/0 merges \"▁\" + \"zz\": \"zz\" is not in /model/vocab"},
      {"spm", [](json& j) { j["model"]["merges"][1] = "▁h"; },
       "/model/merges/1 \"▁h\" must be two tokens separated by one space"},
      {"spm", [](json& j) { j["model"]["merges"][1] = 7; },
       "/model/merges/1 must be a string \"a b\" or a pair"},
      {"spm", [](json& j) { j["model"]["vocab"]["<s>"] = -4; },
       "/model/vocab entry \"<s>\" must have an id in 0..2^31-1, found -4"},
      {"spm", [](json& j) { j["model"]["vocab"] = json::array(); },
       "/model/vocab must be an object, found array"},
      {"spm", [](json& j) { j.erase("model"); }, "MODEL/tokenizer.json: / has no member \"model\""},
      {"spm", [](json& j) { j["added_tokens"][1]["id"] = "1"; },
       "/added_tokens/1/id must be an integer, found string"},
      {"spm", [](json& j) { j["added_tokens"][1].erase("content"); },
       "/added_tokens/1 has no member \"content\""},
      {"spm",
       [](json& j) {
         j["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", "(a"}};
       },
       "MODEL/tokenizer.json: /normalizer/normalizers/1/pattern/Regex regex \"(a\" does not "
       "compile"},
      {"spm", [](json& j) { j["normalizer"]["normalizers"][1]["pattern"] = json::object(); },
       "/normalizer/normalizers/1/pattern must have a \"String\" or \"Regex\" member"},
      {"llama3",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "[z-a]"; },
       "/pre_tokenizer/pretokenizers/0/pattern/Regex regex \"[z-a]\" does not compile at offset"},
      {"llama3", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Glued"; },
       "/pre_tokenizer/pretokenizers/0/behavior \"Glued\" is not a split behavior"},
      {"metaspace", [](json& j) { j["pre_tokenizer"]["replacement"] = "__"; },
       "/pre_tokenizer/replacement must be one character"},
      {"metaspace", [](json& j) { j["pre_tokenizer"]["prepend_scheme"] = "sometimes"; },
       "/pre_tokenizer/prepend_scheme \"sometimes\" is not one of always, first, never"},
      {"llama3",
       [](json& j) {
         j["post_processor"]["processors"][1]["single"][0] = {{"Pair", 1}};
       },
       "/post_processor/processors/1/single/0 must be a \"Sequence\" or a \"SpecialToken\""},
      {"llama3",
       [](json& j) { j["post_processor"]["processors"][1]["special_tokens"] = json::object(); },
       "/post_processor/processors/1/special_tokens has no member \"<|begin_of_text|>\""},
      {"llama3",
       [](json& j) {
         j["post_processor"]["processors"][1]["special_tokens"]["<|begin_of_text|>"]["ids"][0] =
             9999;
       },
       "/post_processor adds the BOS id 9999, which is not in the vocabulary (274 tokens)"},
      {"llama3",
       [](json& j) {
         j["post_processor"]["processors"][1]["special_tokens"]["<|begin_of_text|>"]["ids"][0] = -2;
       },
       "/post_processor/processors/1/special_tokens/<|begin_of_text|>/ids/0 must be a token id, "
       "found -2"},
      {"spm", [](json& j) { j["pre_tokenizer"] = "Metaspace"; },
       "/pre_tokenizer must be a JSON object, found string"},
  };
  for (const Broken& c : cases) {
    json j = load(c.base);
    c.edit(j);
    const std::string e = error_of(j);
    EXPECT_NE(e.find(c.message), std::string::npos) << "want: " << c.message << "\ngot:  " << e;
  }
}

TEST(TokenizerJson, MissingUnkTokenFailsOnlyWhenNeeded) {
  json j = load("metaspace");
  j["model"]["unk_token"] = "<nope>";
  const auto tok = make(j);
  EXPECT_EQ(tok->encode("he").size(), 1u);
  try {
    tok->encode("he!");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/model/unk_token \"<nope>\" is not in /model/vocab"),
              std::string::npos)
        << e.what();
  }
}

TEST(TokenizerJson, MalformedJsonNamesTheFile) {
  const fs::path dir = fs::temp_directory_path() / ("qshard_tokbad_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << "{\"model\": ";
  try {
    qshard::Tokenizer::load(dir.string());
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: not valid JSON"), std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
