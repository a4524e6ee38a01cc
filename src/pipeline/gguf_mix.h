// llama.cpp's named quantization mixes (--format gguf:Q4_K_M ...): which llama.cpp type
// each tensor gets, as llama-quantize's llama_tensor_get_type decides it for a Llama
// (src/llama-quant.cpp: the mix's default type, raised for attn_v / ffn_down /
// attn_output in some layers, output.weight in Q6_K), then tensor_type_fallback for rows
// the type's block does not divide (Q2_K, Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1,
// Q6_K -> Q8_0, IQ4_XS -> IQ4_NL; F16 when not even 32 divides). The same fallback applies
// to a plain 256-block --format (K-quants, iq4_xs).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/model_spec.h"
#include "quant/format.h"

namespace qshard {

struct GgufMix {
  std::string name;        // "Q4_K_M"
  QuantFormat base;        // its default type
  uint32_t file_type = 0;  // llama_ftype, for general.file_type
};

// "gguf:Q4_K_M" (case-insensitive after the colon); nullopt for a name without "gguf:".
// InputError listing the supported mixes for an unknown one.
std::optional<GgufMix> parse_gguf_mix(const std::string& format_name);

struct GgufPlan {
  // Per Linear module ("model.layers.3.mlp.down_proj", "lm_head"): its format, or nullopt
  // for F16 (left unquantized). Only modules whose type differs from `base` are listed.
  std::map<std::string, std::optional<QuantFormat>> modules;
  // Dense tensors the GGUF writer quantizes itself (RTN, llama.cpp's reference):
  // "model.embed_tokens.weight" / "lm_head.weight" -> format name (q6_k, q8_0, ...); "f16"
  // for those and for the Linears left unquantized because not even 32 divides their rows.
  std::map<std::string, std::string> dense;
  std::vector<std::string> fallbacks;  // one line per tensor that fell back, for the log
};

// llama-quantize's tensor_type_fallback for one matrix of `ncols` columns: `f` itself when
// its block divides them, else the 32-block type llama.cpp uses instead (Q2_K, Q3_K -> Q4_0,
// Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL); nullopt (F16) when not even
// 32 divides.
std::optional<QuantFormat> gguf_fallback(const QuantFormat& f, int64_t ncols);

// `mix` null: a plain --format (only the fallback applies; token_embd/lm_head stay dense).
// `imatrix`: the rules llama-quantize applies with an imatrix (Q4_0/Q5_0: ffn_down of the
// first n/8 layers Q4_1/Q5_1; IQ4_NL/IQ4_XS: ffn_down stays IQ4 there instead of Q5_K),
// for methods fitted to calibration statistics, whose files then have the same types and
// size as llama-quantize --imatrix's; rtn (no statistics) takes the rules without one.
GgufPlan plan_gguf(const ModelSpec& spec, const QuantFormat& base, const GgufMix* mix, bool imatrix = false);

}  // namespace qshard
