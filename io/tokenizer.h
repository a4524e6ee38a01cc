// The model's tokenizer: Hugging Face tokenizer.json with a BPE model (Llama 3, Qwen2,
// SmolLM2, Llama 2 fast ...; io/tokenizer_json.h), else sentencepiece tokenizer.model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qshard {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Loads the tokenizer of a Hugging Face model directory: tokenizer.json when present.
  static std::unique_ptr<Tokenizer> load(const std::string& model_dir);

  // Token ids of `text` with no BOS/EOS added.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual int32_t bos_id() const = 0;  // -1 if the model has none
  virtual int64_t vocab_size() const = 0;
  virtual std::string describe() const = 0;  // which file, and the vocab size
};

}  // namespace qshard
