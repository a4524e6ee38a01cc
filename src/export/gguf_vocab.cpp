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

// llama_ftype (llama.h) of a file whose quantized tensors are mostly `f`.
uint32_t file_type(const QuantFormat& f, bool any_quantized) {
  if (!any_quantized || !f.is_ggml()) return 0;  // ALL_F32
  if (f.family == FormatFamily::GgmlIQ4NL) return 25;
  if (f.family == FormatFamily::GgmlIQ4XS) return 30;
  if (f.family == FormatFamily::GgmlK) return f.bits == 2 ? 10 : f.bits == 3 ? 11 : f.bits == 4 ? 14 : f.bits == 5 ? 16 : 18;  // _K_S, Q6_K
  if (f.bits == 8) return 7;
  if (f.bits == 4) return f.symmetric ? 2 : 3;
  return f.symmetric ? 8 : 9;
}

int64_t need_int(const nlohmann::json& config, const char* key) {
  if (!config.contains(key) || !config[key].is_number_integer())
    fail_input("config.json: missing integer \"", key, "\", which the GGUF export needs");
  return config[key].get<int64_t>();
}

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

// llama.cpp's pre-tokenizer name for a tokenizer.json pre_tokenizer (the converter finds
// it by hashing the tokens of a test text; these are the layouts qshard's tokenizer reads).
std::string bpe_pre(const nlohmann::json& pre) {
  const auto type = [](const nlohmann::json& j) { return j.value("type", std::string()); };
  if (pre.is_object() && type(pre) == "Sequence" && pre.contains("pretokenizers")) {
    const auto& s = pre["pretokenizers"];
    if (s.size() == 2 && type(s[0]) == "Digits" && s[0].value("individual_digits", false) &&
        type(s[1]) == "ByteLevel")
      return "smollm";
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

GgufModel gguf_model_metadata(const nlohmann::json& config, const ExportInfo& info, GgufFile& file) {
  const std::string type = config.value("model_type", std::string());
  if (type != "llama" && type != "mistral")
    fail_input("config.json: --export gguf writes llama.cpp's \"llama\" architecture, for "
               "model_type llama or mistral, not \"", type, "\": use --export fakequant or hdf5");
  if (config.contains("rope_scaling") && !config["rope_scaling"].is_null())
    fail_input("config.json: --export gguf does not write rope_scaling (llama.cpp's rope_freqs "
               "tensor) yet: use --export fakequant or hdf5 for this model");
  GgufModel m;
  const int64_t hidden = need_int(config, "hidden_size");
  m.n_head = need_int(config, "num_attention_heads");
  m.n_head_kv = config.contains("num_key_value_heads") ? need_int(config, "num_key_value_heads") : m.n_head;
  const int64_t head_dim = config.contains("head_dim") ? need_int(config, "head_dim") : hidden / m.n_head;
  const std::string name = fs::path(info.source_model_dir).filename().string();
  file.set_string("general.architecture", "llama");
  file.set_string("general.name", name.empty() ? "model" : name);
  file.set_u32("general.quantization_version", 2);
  file.set_u32("general.file_type", info.gguf_file_type ? info.gguf_file_type : file_type(info.format, true));
  file.set_u32("llama.block_count", uint32_t(need_int(config, "num_hidden_layers")));
  file.set_u32("llama.context_length", uint32_t(config.value("max_position_embeddings", int64_t(2048))));
  file.set_u32("llama.embedding_length", uint32_t(hidden));
  file.set_u32("llama.feed_forward_length", uint32_t(need_int(config, "intermediate_size")));
  file.set_u32("llama.attention.head_count", uint32_t(m.n_head));
  file.set_u32("llama.attention.head_count_kv", uint32_t(m.n_head_kv));
  file.set_f32("llama.rope.freq_base", config.value("rope_theta", 10000.0f));
  file.set_f32("llama.attention.layer_norm_rms_epsilon", config.value("rms_norm_eps", 1e-6f));
  if (head_dim != hidden / m.n_head) {
    file.set_u32("llama.attention.key_length", uint32_t(head_dim));
    file.set_u32("llama.attention.value_length", uint32_t(head_dim));
  }
  file.set_u32("llama.vocab_size", uint32_t(need_int(config, "vocab_size")));
  file.set_u32("llama.rope.dimension_count", uint32_t(head_dim));
  return m;
}

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
