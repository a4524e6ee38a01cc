// Fixtures for the export tests: a scratch directory, a small fake source model directory
// (1-layer Llama, hidden 64), and QuantizedLinears built by hand from a seed, with known
// codes, scales, zero points and (optionally) act-order g_idx.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "export/exporter.h"
#include "io/safetensors.h"
#include "quant/quantized.h"

namespace qshard::testing {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag = "export") {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("qshard-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

inline void write_text(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), std::streamsize(bytes.size()));
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A deterministic generator whose outputs do not depend on the standard library
// (std::*_distribution are implementation-defined).
class Rng {
 public:
  explicit Rng(uint32_t seed) : g_(seed) {}
  uint32_t next() { return uint32_t(g_()); }
  uint32_t below(uint32_t n) { return next() % n; }
  float uniform(float lo, float hi) { return lo + (hi - lo) * float(next() >> 8) / float(1u << 24); }

 private:
  std::mt19937 g_;
};

struct ModuleSpec {
  std::string name;  // "model.layers.0.self_attn.q_proj"
  QuantFormat format;
  int64_t out = 0, in = 0;
  bool act_order = false;
  bool explicit_sym_zeros = false;  // symmetric Int: store zeros = 2^(bits-1) (else empty)
};

inline QuantFormat int_format(int bits, int64_t group, bool sym) {
  return QuantFormat::parse("int" + std::to_string(bits), group, sym);
}

inline QuantFormat other_format(FormatFamily family, int bits, int64_t group) {
  QuantFormat f;
  f.family = family;
  f.bits = bits;
  f.group_size = group;
  f.symmetric = true;
  return f;
}

// Known, seeded contents. Int: codes uniform over [0, 2^bits), scales in [1e-3, 4e-2)
// (not representable in F16/BF16, so rounding is exercised), asymmetric zero points
// covering 0 and 2^bits − 1; act-order: g_idx from a random permutation.
inline QuantizedLinear make_module(const ModuleSpec& s, uint32_t seed) {
  Rng rng(seed);
  QuantizedLinear q;
  q.format = s.format;
  q.out_features = s.out;
  q.in_features = s.in;
  const int64_t gw = s.format.group_size == -1 ? s.in : s.format.group_size;
  const int64_t ng = s.in / gw;
  const uint32_t levels = 1u << s.format.bits;
  q.codes.resize(size_t(s.out * s.in));
  for (auto& c : q.codes) c = uint8_t(rng.below(levels));
  q.scales.resize(size_t(s.out * ng));
  switch (s.format.family) {
    case FormatFamily::Int:
      for (auto& x : q.scales) x = rng.uniform(1e-3f, 4e-2f);
      if (!s.format.symmetric) {
        q.zeros.resize(q.scales.size());
        for (auto& z : q.zeros) z = float(rng.below(levels));
        q.zeros[0] = 0.0f;
        q.zeros.back() = float(levels - 1);
      } else if (s.explicit_sym_zeros) {
        q.zeros.assign(q.scales.size(), float(levels / 2));
      }
      break;
    case FormatFamily::MXInt:
    case FormatFamily::MXFP4:
      for (auto& x : q.scales) x = std::ldexp(1.0f, -int(rng.below(10)));
      break;
    case FormatFamily::NVFP4:
      for (auto& x : q.scales) x = f8e4m3_to_f32(uint8_t(1 + rng.below(126)));
      q.tensor_scale = 0.0123f;
      break;
    case FormatFamily::GgmlBlock:
    case FormatFamily::GgmlK:
    case FormatFamily::GgmlIQ4NL:
    case FormatFamily::GgmlIQ4XS:  // FP16-exact block scales (and minima for the _1 types)
      for (auto& x : q.scales) x = std::ldexp(1.0f, -int(rng.below(10)));
      if (!s.format.symmetric) q.zeros.assign(q.scales.size(), -0.25f);
      break;
  }
  q.g_idx.resize(size_t(s.in));
  if (s.act_order) {
    std::vector<int64_t> perm(size_t(s.in));
    for (int64_t i = 0; i < s.in; ++i) perm[size_t(i)] = i;
    for (int64_t i = s.in - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[rng.below(uint32_t(i + 1))]);
    for (int64_t j = 0; j < s.in; ++j) q.g_idx[size_t(perm[size_t(j)])] = int32_t(j / gw);
  } else {
    for (int64_t c = 0; c < s.in; ++c) q.g_idx[size_t(c)] = int32_t(c / gw);
  }
  return q;
}

// The weights a reader must produce: QuantizedLinear::dequantize with the scales rounded
// through the container's scale dtype and a symmetric zero point made explicit.
inline Tensor reference_weights(const QuantizedLinear& q_in, DType scale_dtype) {
  QuantizedLinear q = q_in;
  for (auto& s : q.scales) {
    if (scale_dtype == DType::F16) s = f16_to_f32(f32_to_f16(s));
    if (scale_dtype == DType::BF16) s = bf16_to_f32(f32_to_bf16(s));
  }
  if (q.format.family == FormatFamily::Int && q.zeros.empty())
    q.zeros.assign(q.scales.size(), float(1 << (q.format.bits - 1)));
  return q.dequantize();
}

inline Tensor bf16_of(const Tensor& f32) {
  Tensor t = Tensor::zeros(DType::BF16, f32.shape());
  for (int64_t i = 0; i < f32.numel(); ++i) t.data<uint16_t>()[i] = f32_to_bf16(f32.data<float>()[i]);
  return t;
}

inline constexpr const char* kLayer = "model.layers.0.";

// Dense tensors of the fake model (BF16, seeded): embeddings, norms, lm_head, a bias.
inline std::vector<std::pair<std::string, Tensor>> dense_tensors(uint32_t seed) {
  Rng rng(seed);
  auto make = [&rng](Shape shape) {
    Tensor t = Tensor::zeros(DType::BF16, shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<uint16_t>()[i] = f32_to_bf16(rng.uniform(-1, 1));
    return t;
  };
  std::vector<std::pair<std::string, Tensor>> d;
  d.push_back({"model.embed_tokens.weight", make({32, 64})});
  d.push_back({std::string(kLayer) + "self_attn.q_proj.bias", make({64})});
  d.push_back({std::string(kLayer) + "input_layernorm.weight", make({64})});
  d.push_back({std::string(kLayer) + "post_attention_layernorm.weight", make({64})});
  d.push_back({"model.norm.weight", make({64})});
  d.push_back({"lm_head.weight", make({32, 64})});
  return d;
}

// A source model directory: config.json (1-layer Llama, hidden 64), tokenizer files,
// a README, a weights file and a sub-directory that exports must not copy.
inline void make_source_dir(const std::string& dir) {
  std::filesystem::create_directories(dir + "/text");
  const nlohmann::json cfg = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", 64},
      {"intermediate_size", 128},
      {"num_hidden_layers", 1},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 2},
      {"vocab_size", 32},
      {"max_position_embeddings", 128},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"bos_token_id", 1},
      {"eos_token_id", 2}};
  write_text(dir + "/config.json", cfg.dump(2) + "\n");
  write_text(dir + "/tokenizer.json", R"({"version": "1.0", "model": {"type": "BPE"}})");
  write_text(dir + "/tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>"})");
  write_text(dir + "/special_tokens_map.json", R"({"bos_token": "<s>"})");
  write_text(dir + "/generation_config.json", R"({"bos_token_id": 1, "eos_token_id": 2})");
  write_text(dir + "/tokenizer.model", std::string("\x0a\x05\x0a\x01<s>\x00\xff binary", 17));
  write_text(dir + "/README.md", "# tiny test model\n");
  write_text(dir + "/quantize_config.json", R"({"bits": 3, "stale": true})");
  write_text(dir + "/text/train.txt", "not copied\n");
  SafetensorsWriter w(dir, "model");
  for (const auto& [name, t] : dense_tensors(7)) w.add(name, t);
  w.finish();
}

inline const std::vector<std::string>& copied_files() {
  static const std::vector<std::string> f = {"tokenizer.json", "tokenizer_config.json",
                                             "special_tokens_map.json", "generation_config.json",
                                             "tokenizer.model", "README.md"};
  return f;
}

// The module sets of the round-trip tests and the Python checker.
enum class Set { Sym, Asym, SymCT, Mixed, W8A8, W4A8, Awq };

inline std::vector<ModuleSpec> module_set(Set set) {
  const std::string L = kLayer;
  switch (set) {
    case Set::Sym:
      return {{L + "self_attn.q_proj", int_format(4, 32, true), 64, 64, false, false},
              {L + "self_attn.k_proj", int_format(4, 16, true), 32, 64, true, true},
              {L + "self_attn.v_proj", int_format(8, -1, true), 32, 64, false, false},
              {L + "self_attn.o_proj", int_format(2, 64, true), 64, 64, true, false},
              {L + "mlp.gate_proj", int_format(3, 32, true), 128, 64, false, true},
              {L + "mlp.up_proj", int_format(4, 32, true), 128, 64, false, false},
              {L + "mlp.down_proj", int_format(4, 32, true), 64, 128, true, false}};
    case Set::SymCT:  // compressed-tensors holds 2, 4 and 8 bits
      return {{L + "self_attn.q_proj", int_format(4, 32, true), 64, 64, false, false},
              {L + "self_attn.k_proj", int_format(4, 16, true), 32, 64, true, true},
              {L + "self_attn.v_proj", int_format(8, -1, true), 32, 64, false, false},
              {L + "self_attn.o_proj", int_format(2, 64, true), 64, 64, true, false},
              {L + "mlp.gate_proj", int_format(4, 32, true), 128, 64, false, true},
              {L + "mlp.up_proj", int_format(4, 32, true), 128, 64, true, false},
              {L + "mlp.down_proj", int_format(4, 32, true), 64, 128, false, false}};
    case Set::Asym:
      return {{L + "self_attn.q_proj", int_format(4, 32, false), 64, 64, false, false},
              {L + "self_attn.k_proj", int_format(4, 16, false), 32, 64, true, false},
              {L + "self_attn.v_proj", int_format(8, -1, false), 32, 64, false, false},
              {L + "self_attn.o_proj", int_format(2, 64, false), 64, 64, false, false},
              {L + "mlp.gate_proj", int_format(4, 32, false), 128, 64, true, false},
              {L + "mlp.up_proj", int_format(4, 32, false), 128, 64, false, false},
              {L + "mlp.down_proj", int_format(8, 32, false), 64, 128, true, false}};
    case Set::Mixed:  // every family (fake-quant and HDF5 hold anything)
      return {{L + "self_attn.q_proj", other_format(FormatFamily::MXInt, 8, 32), 64, 64, false, false},
              {L + "self_attn.k_proj", other_format(FormatFamily::MXInt, 4, 32), 32, 64, false, false},
              {L + "self_attn.v_proj", other_format(FormatFamily::MXFP4, 4, 32), 32, 64, false, false},
              {L + "self_attn.o_proj", other_format(FormatFamily::NVFP4, 4, 16), 64, 64, false, false},
              {L + "mlp.gate_proj", other_format(FormatFamily::MXInt, 3, 16), 128, 64, false, false},
              {L + "mlp.up_proj", int_format(4, 32, false), 128, 64, true, false},
              {L + "mlp.down_proj", int_format(5, -1, true), 64, 128, false, false}};
    case Set::W8A8:  // compressed-tensors int-quantized: int8 per channel, symmetric
      return {{L + "self_attn.q_proj", int_format(8, -1, true), 64, 64, false, false},
              {L + "self_attn.k_proj", int_format(8, -1, true), 32, 64, false, true},
              {L + "self_attn.v_proj", int_format(8, -1, true), 32, 64, false, false},
              {L + "self_attn.o_proj", int_format(8, -1, true), 64, 64, false, false},
              {L + "mlp.gate_proj", int_format(8, -1, true), 128, 64, false, false},
              {L + "mlp.up_proj", int_format(8, -1, true), 128, 64, false, false},
              {L + "mlp.down_proj", int_format(8, -1, true), 64, 128, false, false}};
    case Set::W4A8:  // int4 symmetric per group (and one per channel)
      return {{L + "self_attn.q_proj", int_format(4, 32, true), 64, 64, false, false},
              {L + "self_attn.k_proj", int_format(4, 32, true), 32, 64, false, true},
              {L + "self_attn.v_proj", int_format(4, 32, true), 32, 64, false, false},
              {L + "self_attn.o_proj", int_format(4, 32, true), 64, 64, false, false},
              {L + "mlp.gate_proj", int_format(4, 32, true), 128, 64, false, false},
              {L + "mlp.up_proj", int_format(4, 32, true), 128, 64, false, false},
              {L + "mlp.down_proj", int_format(4, 32, true), 64, 128, false, false}};
    case Set::Awq:  // AWQ GEMM: int4 asymmetric, one group size, no act-order
      return {{L + "self_attn.q_proj", int_format(4, 32, false), 64, 64, false, false},
              {L + "self_attn.k_proj", int_format(4, 32, false), 32, 64, false, false},
              {L + "self_attn.v_proj", int_format(4, 32, false), 32, 64, false, false},
              {L + "self_attn.o_proj", int_format(4, 32, false), 64, 64, false, false},
              {L + "mlp.gate_proj", int_format(4, 32, false), 128, 64, false, false},
              {L + "mlp.up_proj", int_format(4, 32, false), 128, 64, false, false},
              {L + "mlp.down_proj", int_format(4, 32, false), 64, 128, false, false}};
  }
  return {};
}

// Writes the fake model in pipeline order and returns the modules by name.
inline std::map<std::string, QuantizedLinear> write_export(ExportKind kind, Set set,
                                                           uint64_t shard_bytes,
                                                           const std::string& src,
                                                           const std::string& out,
                                                           ActFormat act = ActFormat::None) {
  const auto specs = module_set(set);
  std::map<std::string, QuantizedLinear> mods;
  const auto dense = dense_tensors(7);
  auto ex = make_exporter(kind, out, shard_bytes, nullptr, act);
  ex->add_dense(dense[0].first, dense[0].second);  // embed_tokens first, as the pipeline does
  uint32_t seed = 100;
  for (const auto& s : specs) {
    QuantizedLinear q = make_module(s, seed++);
    ex->add_quantized(s.name, q);
    if (s.name.ends_with("q_proj")) ex->add_dense(dense[1].first, dense[1].second);  // its bias
    mods.emplace(s.name, std::move(q));
  }
  for (size_t i = 2; i < dense.size(); ++i) ex->add_dense(dense[i].first, dense[i].second);
  ExportInfo info;
  info.source_model_dir = src;
  info.method = "gptq";
  info.format = specs.front().format;
  info.act_order = set != Set::W8A8 && set != Set::W4A8 && set != Set::Awq;
  info.ignored_modules = {"lm_head"};
  ex->finish(info);
  return mods;
}

}  // namespace qshard::testing
