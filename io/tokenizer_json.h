// Hugging Face `tokenizers` files (tokenizer.json) with a BPE model: what transformers'
// fast tokenizers and vLLM use. docs/tokenizer.md lists the supported components; any
// other is one InputError naming the file and the JSON path.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "io/tokenizer.h"

namespace qshard {

// `json` is the parsed tokenizer.json, `config` the parsed tokenizer_config.json (null if
// the model has none); `path` names the file in messages.
std::unique_ptr<Tokenizer> make_json_tokenizer(const nlohmann::json& json,
                                               const nlohmann::json& config,
                                               const std::string& path);

// Reads DIR/tokenizer.json (and DIR/tokenizer_config.json when present).
std::unique_ptr<Tokenizer> load_json_tokenizer(const std::string& model_dir);

}  // namespace qshard
