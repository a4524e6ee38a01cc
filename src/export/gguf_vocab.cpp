#include "export/gguf_vocab.h"

#include <filesystem>
#include <fstream>
#include <map>

#include <sentencepiece_processor.h>

#include "core/error.h"
#include "core/log.h"

namespace qshard::exporting {

namespace {

namespace fs = std::filesystem;

nlohmann::json read_json_if(const fs::path& p) {
  if (!fs::exists(p)) return nlohmann::json::object();
  std::ifstream f(p);
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail_input(p.string(), ": not valid JSON (", e.what(), ")");
  }
}

// SentencePieceTokenTypes / gguf.TokenType
enum : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

void sentencepiece_vocab(const fs::path& path, int64_t vocab_size, GgufFile& file) {
  sentencepiece::SentencePieceProcessor sp;
  if (const auto st = sp.Load(path.string()); !st.ok())
    fail_input(path.string(), ": not a loadable sentencepiece model (", st.ToString(), ")");
  const int64_t n = vocab_size > 0 ? vocab_size : sp.GetPieceSize();
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<float> scores(size_t(n), -10000.0f);
  std::vector<int32_t> types(size_t(n), kUnused);
  for (int64_t i = 0; i < n; ++i) tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";
  for (int id = 0; id < sp.GetPieceSize() && id < n; ++id) {
    tokens[size_t(id)] = sp.IdToPiece(id);
    scores[size_t(id)] = sp.GetScore(id);
    types[size_t(id)] = sp.IsUnknown(id)   ? kUnknown
                        : sp.IsControl(id) ? kControl
                        : sp.IsUnused(id)  ? kUnused
                        : sp.IsByte(id)    ? kByte
                                           : kNormal;
  }
  file.set_string("tokenizer.ggml.model", "llama");
  file.set_string("tokenizer.ggml.pre", "default");
  file.set_strings("tokenizer.ggml.tokens", tokens);
  file.set_f32s("tokenizer.ggml.scores", scores);
  file.set_i32s("tokenizer.ggml.token_type", types);
  if (sp.unk_id() >= 0) file.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(sp.unk_id()));
}

// The Split regexes of Llama 3's and Qwen2's tokenizer.json (Qwen2.5 and Qwen3 ship
// Qwen2's), which llama.cpp's llama-vocab.cpp adapts for pre "llama-bpe" and "qwen2".
constexpr const char* kLlama3Regex =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
constexpr const char* kQwen2Regex =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// llama.cpp's pre-tokenizer name for a tokenizer.json pre_tokenizer. The converter finds
// it by hashing the tokens of a test text; qshard names the layouts whose splitting
// llama.cpp reproduces under that name: SmolLM's digits + byte-level, and a byte-level
// after one Split by Llama 3's or Qwen2's regex.
std::string bpe_pre(const nlohmann::json& pre) {
  const auto type = [](const nlohmann::json& j) { return j.value("type", std::string()); };
  if (pre.is_object() && type(pre) == "Sequence" && pre.contains("pretokenizers")) {
    const auto& s = pre["pretokenizers"];
    if (s.size() == 2 && type(s[0]) == "Digits" && s[0].value("individual_digits", false) &&
        type(s[1]) == "ByteLevel")
      return "smollm";
    if (s.size() == 2 && type(s[0]) == "Split" && type(s[1]) == "ByteLevel" && s[0].contains("pattern") &&
        s[0]["pattern"].is_object() && s[0]["pattern"].value("Regex", std::string()) != "") {
      const std::string re = s[0]["pattern"]["Regex"].get<std::string>();
      if (re == kLlama3Regex) return "llama-bpe";
      if (re == kQwen2Regex) return "qwen2";
    }
  }
  if (pre.is_object() && type(pre) == "ByteLevel") return "gpt-2";
  log_warn_line("--export gguf: tokenizer.json's pre_tokenizer is not one qshard names for llama.cpp; "
           "writing tokenizer.ggml.pre \"default\" (llama.cpp may split text differently)");
  return "default";
}

void bpe_vocab(const fs::path& path, int64_t vocab_size, GgufFile& file,
               std::map<std::string, int64_t>& ids) {
  const nlohmann::json tj = read_json_if(path);
  const auto& model = tj.at("model");
  if (model.value("type", std::string()) != "BPE")
    fail_input(path.string(), ": --export gguf writes BPE tokenizer.json models (this one is ",
               model.value("type", std::string("?")), ")");
  int64_t n = vocab_size;
  for (const auto& [tok, id] : model.at("vocab").items()) n = std::max(n, id.get<int64_t>() + 1), ids[tok] = id;
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<int32_t> types(size_t(n), kUnused);
  for (int64_t i = 0; i < n; ++i) tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";
  for (const auto& [tok, id] : ids) tokens[size_t(id)] = tok, types[size_t(id)] = kNormal;
  for (const auto& a : tj.value("added_tokens", nlohmann::json::array())) {
    const int64_t id = a.at("id").get<int64_t>();
    if (id < 0 || id >= n) continue;
    tokens[size_t(id)] = a.at("content").get<std::string>();
    types[size_t(id)] = a.value("special", false) ? kControl : kUserDefined;
    ids[tokens[size_t(id)]] = id;
  }
  std::vector<std::string> merges;
  for (const auto& m : model.value("merges", nlohmann::json::array()))
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
  file.set_string("tokenizer.ggml.model", "gpt2");
  file.set_string("tokenizer.ggml.pre", bpe_pre(tj.value("pre_tokenizer", nlohmann::json())));
  file.set_strings("tokenizer.ggml.tokens", tokens);
  file.set_i32s("tokenizer.ggml.token_type", types);
  file.set_strings("tokenizer.ggml.merges", merges);
}

// tokenizer_config.json's "bos_token" as a string ("<s>") or {"content": "<s>"}.
std::string token_content(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v["content"].get<std::string>();
  return "";
}

}  // namespace

void write_tokenizer(const std::string& model_dir, const nlohmann::json& config, GgufFile& file) {
  const fs::path dir(model_dir);
  const int64_t vocab_size = config.value("vocab_size", int64_t(0));
  std::map<std::string, int64_t> ids;
  if (fs::exists(dir / "tokenizer.model")) {
    sentencepiece_vocab(dir / "tokenizer.model", vocab_size, file);
  } else if (fs::exists(dir / "tokenizer.json")) {
    bpe_vocab(dir / "tokenizer.json", vocab_size, file, ids);
  } else {
    fail_input(model_dir, ": --export gguf needs the tokenizer (tokenizer.model or tokenizer.json)");
  }
  // SpecialVocab: ids from tokenizer_config.json's token strings, else config.json's ids.
  const nlohmann::json tc = read_json_if(dir / "tokenizer_config.json");
  for (const char* kind : {"bos", "eos", "pad"}) {
    const std::string key = std::string(kind) + "_token";
    int64_t id = -1;
    if (auto it = ids.find(token_content(tc.value(key, nlohmann::json()))); it != ids.end()) id = it->second;
    else if (config.contains(key + "_id") && config[key + "_id"].is_number_integer()) id = config[key + "_id"].get<int64_t>();
    const std::string gkey = std::string("tokenizer.ggml.") + (std::string(kind) == "pad" ? "padding" : kind) + "_token_id";
    if (id >= 0) file.set_u32(gkey, uint32_t(id));
  }
  if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean())
    file.set_bool("tokenizer.ggml.add_bos_token", tc["add_bos_token"].get<bool>());
  if (tc.contains("add_eos_token") && tc["add_eos_token"].is_boolean())
    file.set_bool("tokenizer.ggml.add_eos_token", tc["add_eos_token"].get<bool>());
  if (tc.contains("chat_template") && tc["chat_template"].is_string())
    file.set_string("tokenizer.ggml.chat_template", tc["chat_template"].get<std::string>());
}

}  // namespace qshard::exporting
