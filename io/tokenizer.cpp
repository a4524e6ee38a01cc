#include "io/tokenizer.h"

#include <sentencepiece_processor.h>

#include "core/error.h"
#include "io/json_file.h"
#include "io/tokenizer_json.h"

namespace qshard {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, int32_t config_bos) : path_(path) {
    const auto status = sp_.Load(path);
    if (!status.ok())
      fail_input(path, ": not a loadable sentencepiece model (", status.ToString(),
                 "): re-download tokenizer.model");
    bos_ = sp_.bos_id() >= 0 ? sp_.bos_id() : config_bos;
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) fail_input(path_, ": tokenizing failed: ", status.ToString());
    return {ids.begin(), ids.end()};
  }
  int32_t bos_id() const override { return bos_; }
  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::string describe() const override {
    return str_cat("sentencepiece ", path_, ", ", sp_.GetPieceSize(), " pieces");
  }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  int32_t bos_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& model_dir) {
  int32_t config_bos = -1;
  const std::string config_path = model_dir + "/config.json";
  if (path_exists(config_path)) {
    const auto config = read_json_file(config_path);
    if (config.contains("bos_token_id") && config["bos_token_id"].is_number_integer())
      config_bos = config["bos_token_id"].get<int32_t>();
  }
  // tokenizer.json first: it is what transformers' fast tokenizers and vLLM use.
  if (path_exists(model_dir + "/tokenizer.json")) return load_json_tokenizer(model_dir);
  const std::string sp_path = model_dir + "/tokenizer.model";
  if (path_exists(sp_path)) return std::make_unique<SentencePieceTokenizer>(sp_path, config_bos);
  fail_input(model_dir, ": no tokenizer.json or tokenizer.model found: copy the tokenizer files "
             "of the model into this directory");
}

}  // namespace qshard
