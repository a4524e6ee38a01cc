#include "pipeline/gguf_mix.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"

namespace qshard {

namespace {

struct MixRow {
  const char* name;
  const char* base;
  uint32_t file_type;
};

// llama_ftype values (llama.h) of the mixes built from the types qshard writes.
constexpr MixRow kMixes[] = {
    {"Q4_0", "q4_0", 2},    {"Q4_1", "q4_1", 3},    {"Q8_0", "q8_0", 7},    {"Q5_0", "q5_0", 8},
    {"Q5_1", "q5_1", 9},    {"Q3_K_M", "q3_k", 12}, {"Q4_K_S", "q4_k", 14}, {"Q4_K_M", "q4_k", 15}, {"Q5_K_S", "q5_k", 16},
    {"Q5_K_M", "q5_k", 17}, {"Q6_K", "q6_k", 18},   {"Q2_K", "q2_k", 10},   {"Q3_K_S", "q3_k", 11},
    {"Q3_K_L", "q3_k", 13}, {"IQ4_NL", "iq4_nl", 25}, {"IQ4_XS", "iq4_xs", 30},
};

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::toupper(c)); });
  return s;
}

QuantFormat fmt(const std::string& name) { return QuantFormat::parse(name, 0, true); }

int64_t block_of(const QuantFormat& f) { return f.ggml_block(); }

// llama-quant.cpp use_more_bits
bool use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// tensor_type_fallback, logged: nullopt = F16.
std::optional<QuantFormat> fallback(const QuantFormat& f, int64_t ncols, const std::string& tensor,
                                    std::vector<std::string>& log) {
  if (ncols % block_of(f) == 0) return f;
  const std::optional<QuantFormat> r = gguf_fallback(f, ncols);
  log.push_back(str_cat(tensor, ": ", ncols, " columns not divisible by ", block_of(f), " (", f.name(),
                        ") -> ", r ? r->name() : std::string("f16"), ", as llama-quantize falls back"));
  return r;
}

}  // namespace

std::optional<QuantFormat> gguf_fallback(const QuantFormat& f, int64_t ncols) {
  if (ncols % block_of(f) == 0) return f;
  if (ncols % 32 != 0) return std::nullopt;
  if (f.family == FormatFamily::GgmlIQ4XS) return fmt("iq4_nl");
  if (f.family != FormatFamily::GgmlK) return f;
  return fmt(f.bits <= 3 ? "q4_0" : f.bits == 4 ? "q5_0" : f.bits == 5 ? "q5_1" : "q8_0");
}

std::optional<GgufMix> parse_gguf_mix(const std::string& format_name) {
  const std::string prefix = "gguf:";
  if (format_name.size() < prefix.size() || format_name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const std::string want = upper(format_name.substr(prefix.size()));
  std::string known;
  for (const MixRow& m : kMixes) {
    if (want == m.name) return GgufMix{m.name, fmt(m.base), m.file_type};
    known += known.empty() ? "" : ", ";
    known += m.name;
  }
  fail_input("--format ", format_name, ": not a llama.cpp mix qshard writes (use gguf: followed by one of ",
             known, ")");
}

GgufPlan plan_gguf(const ModelSpec& spec, const QuantFormat& base, const GgufMix* mix, bool imatrix) {
  GgufPlan plan;
  const std::string m = mix ? mix->name : "";
  const int64_t n = spec.num_layers, hidden = spec.hidden_size;
  const int64_t gqa = spec.n_kv_heads > 0 ? spec.n_heads / spec.n_kv_heads : 1;  // hparams.n_gqa()
  auto set = [&](const std::string& module, const QuantFormat& f, int64_t ncols) {
    const std::optional<QuantFormat> r = fallback(f, ncols, module, plan.fallbacks);
    if (!r || r->name() != base.name()) plan.modules[module] = r;
    if (!r) plan.dense[module + ".weight"] = "f16";  // F16 as llama-quantize, whatever --gguf-dense says
  };
  for (int64_t i = 0; i < n; ++i) {
    const std::string p = spec.layer_prefix(i);
    QuantFormat v = base, down = base, o = base;
    if ((m == "Q4_K_M" || m == "Q5_K_M") && use_more_bits(i, n)) v = fmt("q6_k");
    if (m == "Q4_K_S" && i < 4) v = fmt("q5_k");
    if ((m == "Q4_K_M" || m == "Q5_K_M") && use_more_bits(i, n)) down = fmt("q6_k");
    if (m == "Q4_K_S" && i < n / 8) down = fmt("q5_k");
    if (m == "Q3_K_M") {  // llama (not falcon): attn_v Q5_K in the first 2 layers, else Q4_K
      v = fmt(i < 2 ? "q5_k" : "q4_k");
      down = fmt(i < n / 16 ? "q5_k" : "q4_k");
      o = fmt("q4_k");
    }
    if (m == "Q2_K") {  // attn_v Q4_K with n_gqa >= 4 else Q3_K; ffn_down, attn_output Q3_K
      v = fmt(gqa >= 4 ? "q4_k" : "q3_k");
      down = o = fmt("q3_k");
    }
    if (m == "Q3_K_L") v = down = o = fmt("q5_k");
    if ((m == "IQ4_NL" || m == "IQ4_XS") && gqa >= 4) v = fmt("q5_k");
    if ((m == "IQ4_NL" || m == "IQ4_XS") && i < n / 8 && !imatrix) down = fmt("q5_k");
    // "Guard against craziness in the first few ffn_down layers", with an imatrix only.
    if ((m == "Q4_0" || m == "Q5_0") && i < n / 8 && imatrix) down = fmt(m == "Q4_0" ? "q4_1" : "q5_1");
    for (const char* s : {"self_attn.q_proj", "self_attn.k_proj", "mlp.gate_proj", "mlp.up_proj"})
      set(p + s, base, hidden);
    set(p + "self_attn.v_proj", v, hidden);
    set(p + "self_attn.o_proj", o, spec.q_dim());
    set(p + "mlp.down_proj", down, spec.intermediate_size);
  }
  if (!mix) return plan;
  // output.weight (token_embd too when tied): Q6_K, or Q8_0 when the default type's block
  // does not divide its rows; token_embd: the default type; both then fall back.
  const QuantFormat out = hidden % block_of(base) != 0 ? fmt("q8_0") : (base.name() == "q8_0" ? base : fmt("q6_k"));
  std::vector<std::string>& log = plan.fallbacks;
  const auto name_of = [](const std::optional<QuantFormat>& f) { return f ? f->name() : std::string("f16"); };
  plan.dense["model.embed_tokens.weight"] =
      name_of(fallback(spec.tie_word_embeddings ? out : base, hidden, "model.embed_tokens", log));
  if (!spec.tie_word_embeddings) plan.dense["lm_head.weight"] = name_of(fallback(out, hidden, "lm_head", log));
  return plan;
}

}  // namespace qshard
