// The model's tokenizer. Today: sentencepiece tokenizer.model (Llama 2, Mistral);
// tokenizer.json BPE (Llama 3, Qwen2) arrives in a later issue behind this interface.
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
  // Loads the tokenizer of a Hugging Face model directory.
  static std::unique_ptr<Tokenizer> load(const std::string& model_dir);

  // Token ids of `text` with no BOS/EOS added.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual int32_t bos_id() const = 0;  // -1 if the model has none
  virtual int64_t vocab_size() const = 0;
  virtual std::string describe() const = 0;  // "sentencepiece tokenizer.model, 32000 pieces"
};

}  // namespace qshard
