#include "io/tokenizer_json.h"

#include <algorithm>
#include <limits>

#include "io/added_tokens.h"
#include "io/bpe_model.h"
#include "io/json_at.h"
#include "io/json_file.h"
#include "io/normalizers.h"
#include "io/pre_tokenizers.h"
#include "io/utf8.h"

namespace qshard {

namespace {

class JsonTokenizer final : public Tokenizer {
 public:
  JsonTokenizer(const nlohmann::json& json, const nlohmann::json& config, const std::string& path);

  std::vector<int32_t> encode(std::string_view text) const override;
  int32_t bos_id() const override { return bos_; }
  int64_t vocab_size() const override { return vocab_size_; }
  std::string describe() const override {
    return str_cat("tokenizer.json ", byte_level_ ? "byte-level " : "", "BPE ", path_, ", ",
                   vocab_size_, " tokens");
  }

 private:
  void encode_text(std::string text, bool at_start, std::vector<int32_t>& out) const;
  void encode_normalized(const std::string& text, bool at_start, std::vector<int32_t>& out) const;
  int32_t find_bos(const JsonAt& root, const nlohmann::json& config) const;
  int32_t token_id(std::string_view content) const;

  std::string path_;
  AddedVocabulary added_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  int32_t bos_ = -1;
  int64_t vocab_size_ = 0;
  bool byte_level_ = false;
};

bool mentions_byte_level(const nlohmann::json& j) {
  if (j.is_object()) {
    const auto t = j.find("type");
    if (t != j.end() && *t == "ByteLevel") return true;
  }
  if (j.is_object() || j.is_array())
    for (const auto& v : j)
      if (mentions_byte_level(v)) return true;
  return false;
}

int32_t token_id_at(const JsonAt& j) {
  const int64_t id = j.integer();
  if (id < 0 || id > std::numeric_limits<int32_t>::max()) j.fail("must be a token id, found ", id);
  return static_cast<int32_t>(id);
}

// The special token the post-processor puts before the text ($A), or -1.
int32_t post_processor_bos(const JsonAt& pp) {
  if (pp.json().is_null()) return -1;
  const std::string type = pp["type"].str();
  if (type == "ByteLevel") return -1;
  if (type == "TemplateProcessing") {
    const JsonAt single = pp["single"];
    single.array();
    for (size_t i = 0; i < single.size(); ++i) {
      const JsonAt item = single.at(i);
      if (item.has("Sequence")) return -1;  // $A comes first: nothing before it
      if (!item.has("SpecialToken")) item.fail("must be a \"Sequence\" or a \"SpecialToken\"");
      const std::string name = item["SpecialToken"]["id"].str();
      const JsonAt special = pp["special_tokens"][name.c_str()];
      const JsonAt ids = special["ids"];
      ids.array();
      if (ids.size() != 1) ids.fail("must hold one id for a BOS token, found ", ids.size());
      return token_id_at(ids.at(0));
    }
    return -1;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {  // [CLS] text [SEP]
    const JsonAt cls = pp["cls"];
    cls.array();
    if (cls.size() != 2) cls.fail("must be [token, id]");
    return token_id_at(cls.at(1));
  }
  if (type == "Sequence") {
    const JsonAt list = pp["processors"];
    list.array();
    for (size_t i = 0; i < list.size(); ++i)
      if (const int32_t id = post_processor_bos(list.at(i)); id >= 0) return id;
    return -1;
  }
  pp["type"].fail("\"", type,
                  "\" is not supported by qshard (supported post-processors: "
                  "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)");
}

JsonTokenizer::JsonTokenizer(const nlohmann::json& json, const nlohmann::json& config,
                             const std::string& path)
    : path_(path) {
  const JsonAt root(json, path_);
  root.object();
  const JsonAt model = root["model"];
  const std::string type = model.has("type")     ? model["type"].str()
                           : model.has("merges") ? "BPE"
                                                 : "";
  if (type != "BPE")
    model.fail("type \"", type, "\" is not supported by qshard (supported models: BPE)");
  model_ = std::make_unique<BpeModel>(model);
  if (root.has("normalizer")) normalizer_ = make_normalizer(root["normalizer"]);
  if (root.has("added_tokens")) added_ = AddedVocabulary(root["added_tokens"], normalizer_.get());
  if (root.has("pre_tokenizer")) pre_tokenizer_ = make_pre_tokenizer(root["pre_tokenizer"]);
  byte_level_ = mentions_byte_level(json.value("pre_tokenizer", nlohmann::json()));
  int64_t max_id = model_->max_id();
  for (const AddedToken& t : added_.tokens()) max_id = std::max<int64_t>(max_id, t.id);
  vocab_size_ = max_id + 1;
  bos_ = find_bos(root, config);
}

int32_t JsonTokenizer::token_id(std::string_view content) const {
  const int32_t id = added_.id_of(content);
  return id >= 0 ? id : model_->id_of(content);
}

// The post-processor's BOS, unless tokenizer_config.json's add_bos_token says otherwise
// (transformers' Llama tokenizers apply that setting over the template).
int32_t JsonTokenizer::find_bos(const JsonAt& root, const nlohmann::json& config) const {
  const int32_t from_template =
      root.has("post_processor") ? post_processor_bos(root["post_processor"]) : -1;
  if (from_template >= vocab_size_)
    root["post_processor"].fail("adds the BOS id ", from_template,
                                ", which is not in the vocabulary (", vocab_size_, " tokens)");
  if (!config.is_object() || !config.contains("add_bos_token") ||
      !config["add_bos_token"].is_boolean())
    return from_template;
  if (!config["add_bos_token"].get<bool>()) return -1;
  if (from_template >= 0) return from_template;
  const std::string cfg_path = path_.substr(0, path_.rfind('/') + 1) + "tokenizer_config.json";
  const JsonAt cfg(config, cfg_path);
  const JsonAt bos = cfg["bos_token"];
  const std::string content = bos.json().is_object() ? bos["content"].str() : bos.str();
  const int32_t id = token_id(content);
  if (id < 0) bos.fail("\"", content, "\" is not a token of ", path_);
  return id;
}

std::vector<int32_t> JsonTokenizer::encode(std::string_view text) const {
  const std::string s = sanitize_utf8(text);
  std::vector<int32_t> out;
  std::vector<AddedVocabulary::Segment> segs;
  added_.split(s, false, segs);
  for (const auto& seg : segs) {
    if (seg.id >= 0)
      out.push_back(seg.id);
    else
      encode_text(s.substr(seg.begin, seg.end - seg.begin), seg.begin == 0, out);
  }
  return out;
}

// Text between raw-matched added tokens: normalize, then match the normalized ones.
void JsonTokenizer::encode_text(std::string text, bool at_start, std::vector<int32_t>& out) const {
  if (normalizer_) normalizer_->apply(text);
  if (!added_.has_normalized()) return encode_normalized(text, at_start, out);
  std::vector<AddedVocabulary::Segment> segs;
  added_.split(text, true, segs);
  for (const auto& seg : segs) {
    if (seg.id >= 0)
      out.push_back(seg.id);
    else
      encode_normalized(text.substr(seg.begin, seg.end - seg.begin), at_start && seg.begin == 0,
                        out);
  }
}

void JsonTokenizer::encode_normalized(const std::string& text, bool at_start,
                                      std::vector<int32_t>& out) const {
  if (text.empty()) return;
  thread_local std::vector<Piece> pieces;
  pieces.assign(1, Piece{text, at_start});
  if (pre_tokenizer_) pre_tokenizer_->apply(pieces);
  for (const Piece& p : pieces) model_->encode(p.text, out);
}

}  // namespace

std::unique_ptr<Tokenizer> make_json_tokenizer(const nlohmann::json& json,
                                               const nlohmann::json& config,
                                               const std::string& path) {
  return std::make_unique<JsonTokenizer>(json, config, path);
}

std::unique_ptr<Tokenizer> load_json_tokenizer(const std::string& model_dir) {
  const std::string path = model_dir + "/tokenizer.json";
  const std::string config_path = model_dir + "/tokenizer_config.json";
  const nlohmann::json config =
      path_exists(config_path) ? read_json_file(config_path) : nlohmann::json();
  return make_json_tokenizer(read_json_file(path), config, path);
}

}  // namespace qshard
