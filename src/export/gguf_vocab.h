// The tokenizer metadata of a GGUF file (tokenizer.model or tokenizer.json), keyed and
// valued as llama.cpp's convert_hf_to_gguf.py writes it (_set_vocab_sentencepiece,
// _set_vocab_gpt2 and gguf-py's SpecialVocab); the hyperparameters are gguf_arch.h's.
// Internal to src/export.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "export/exporter.h"
#include "export/gguf_file.h"

namespace qshard::exporting {

// tokenizer.ggml.* keys from model_dir's tokenizer.model, else its tokenizer.json.
void write_tokenizer(const std::string& model_dir, const nlohmann::json& config, GgufFile& file);

}  // namespace qshard::exporting
