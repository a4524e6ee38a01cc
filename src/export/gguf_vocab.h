// The metadata of a GGUF Llama file: hyperparameters from config.json and the tokenizer
// (tokenizer.model or tokenizer.json), keyed and valued as llama.cpp's
// convert_hf_to_gguf.py writes them (LlamaModel.set_gguf_parameters,
// _set_vocab_sentencepiece, _set_vocab_gpt2 and gguf-py's SpecialVocab). Internal to
// src/export.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "export/exporter.h"
#include "export/gguf_file.h"

namespace qshard::exporting {

struct GgufModel {
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
};

// general.* and llama.* keys; InputError naming config.json for a model the GGUF export
// cannot describe (a model_type other than llama/mistral, rope_scaling).
GgufModel gguf_model_metadata(const nlohmann::json& config, const ExportInfo& info, GgufFile& file);
// tokenizer.ggml.* keys from model_dir's tokenizer.model, else its tokenizer.json.
void write_tokenizer(const std::string& model_dir, const nlohmann::json& config, GgufFile& file);

}  // namespace qshard::exporting
