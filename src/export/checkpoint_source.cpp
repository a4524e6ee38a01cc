// open_checkpoint: a model directory as a TensorSource of dense weights. Plain and
// fake-quant checkpoints are TensorStores; GPTQ, AWQ (GEMM), compressed-tensors
// pack-quantized / int-quantized and qshard-hdf5 exports are read by the readers below,
// written from formats.md (B.3, B.4, C, D.3, D.6, docs/formats-hdf5.md) and not from our
// writers' code, so a round trip checks one against the other. Each quantized module appears as "<module>.weight", F32 [out, in],
// dequantized on read exactly as an engine would: scale · (q − zero) in float.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
// libstdc++ 12's <regex> trips -Wmaybe-uninitialized under -fsanitize (a false positive
// inside std::function); the pragma covers the header's own lines.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#pragma GCC diagnostic pop
#include <set>

#include "core/dtype.h"
#include "core/error.h"
#include "export/exporter.h"
#include "io/hdf5_file.h"
#include "io/json_file.h"
#include "io/safetensors.h"

namespace qshard {

namespace {

namespace fs = std::filesystem;

// Field i of a dense LSB-first bit stream held in 32-bit words words[0], words[stride], ...
// (formats.md B.3: field i occupies stream bits [i·bits, i·bits + bits), word w holds
// stream bits [32w, 32w + 32); a field may straddle two words when 32 % bits != 0).
inline uint32_t stream_field(const int32_t* words, int64_t stride, int64_t i, int bits) {
  const int64_t bit = i * bits;
  const int64_t w = bit / 32;
  const int off = int(bit % 32);
  uint64_t v = uint64_t(uint32_t(words[w * stride])) >> off;
  if (off + bits > 32) v |= uint64_t(uint32_t(words[(w + 1) * stride])) << (32 - off);
  return uint32_t(v) & ((1u << bits) - 1);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Python's re.match: the pattern must match at the start, not necessarily to the end.
bool re_match(const std::string& pattern, const std::string& s, const std::string& where) {
  try {
    return std::regex_search(s, std::regex(pattern), std::regex_constants::match_continuous);
  } catch (const std::regex_error& e) {
    fail_input(where, ": invalid regular expression '", pattern, "' (", e.what(), ")");
  }
}

// Float scales of any stored float dtype as F32.
std::vector<float> as_f32(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  convert_to_f32(t.dtype(), t.raw(), v.data(), v.size());
  return v;
}

void expect_dtype(const Tensor& t, std::initializer_list<DType> ok, const std::string& where,
                  const std::string& name) {
  for (DType d : ok)
    if (t.dtype() == d) return;
  fail_input(where, ": tensor '", name, "' has dtype ", dtype_name(t.dtype()),
             ", which this layout does not use");
}

void expect_shape(const Tensor& t, const Shape& shape, const std::string& where, const std::string& name) {
  if (t.shape() != shape)
    fail_input(where, ": tensor '", name, "' has shape ", shape_str(t.shape()), ", expected ",
               shape_str(shape));
}

// A TensorStore whose packed modules are replaced by dequantized "<module>.weight".
class PackedSource : public TensorSource {
 public:
  bool contains(const std::string& name) const override {
    return view_.count(name) != 0 || store_.contains(name);
  }
  std::vector<std::string> names() const override { return names_; }
  Tensor get(const std::string& name) const override {
    if (ends_with(name, ".weight")) {
      const std::string module = name.substr(0, name.size() - 7);
      if (modules_.count(module)) return dequantize(module);
    }
    if (!store_.contains(name))
      fail_input(dir_, ": tensor '", name, "' is not in this checkpoint");
    return store_.get(name);
  }

 protected:
  PackedSource(std::string dir, TensorStore store) : dir_(std::move(dir)), store_(std::move(store)) {}
  virtual Tensor dequantize(const std::string& module) const = 0;

  // Modules are the prefixes of tensors named "<module><marker>"; the tensors named
  // "<module><suffix>" for suffix in `packed` are hidden behind "<module>.weight".
  void index(const std::string& marker, const std::vector<std::string>& packed) {
    for (const auto& n : store_.names())
      if (ends_with(n, marker)) modules_.insert(n.substr(0, n.size() - marker.size()));
    for (const auto& n : store_.names()) {
      bool hidden = false;
      for (const auto& suffix : packed)
        if (ends_with(n, suffix) && modules_.count(n.substr(0, n.size() - suffix.size()))) {
          hidden = true;
          if (suffix == marker) names_.push_back(n.substr(0, n.size() - marker.size()) + ".weight");
        }
      if (!hidden) names_.push_back(n);
    }
    for (const auto& m : modules_) {
      if (store_.contains(m + ".weight"))
        fail_input(dir_, ": module ", m, " has both a dense weight and packed tensors");
    }
    view_.insert(names_.begin(), names_.end());
  }

  Tensor need(const std::string& module, const std::string& suffix) const {
    const std::string name = module + suffix;
    if (!store_.contains(name))
      fail_input(dir_, ": tensor '", name, "' is missing (module ", module,
                 " is packed but incomplete)");
    return store_.get(name);
  }

  std::string dir_;
  TensorStore store_;
  std::set<std::string> modules_;
  std::vector<std::string> names_;
  std::set<std::string> view_;
};

// ------------------------------------------------------------------------------ GPTQ

class GptqSource final : public PackedSource {
 public:
  GptqSource(const std::string& dir, const nlohmann::json& qc, const std::string& config_path)
      : PackedSource(dir, TensorStore::open(dir)) {
    try {
      bits_ = qc.at("bits").get<int>();
      const std::string fmt = qc.value("checkpoint_format", qc.value("format", std::string("gptq")));
      if (fmt != "gptq" && fmt != "gptq_v2")
        fail_input(config_path, ": GPTQ checkpoint_format '", fmt,
                   "' is not supported (gptq, gptq_v2)");
      v2_ = fmt == "gptq_v2";
      if (qc.contains("dynamic") && qc["dynamic"].is_object())
        for (const auto& [pattern, override_] : qc["dynamic"].items()) {
          if (pattern.rfind("-:", 0) == 0) continue;  // skipped modules stay dense
          Dynamic d;
          d.pattern = pattern.rfind("+:", 0) == 0 ? pattern.substr(2) : pattern;
          d.bits = override_.value("bits", bits_);
          dynamic_.push_back(d);
        }
    } catch (const nlohmann::json::exception& e) {
      fail_input(config_path, ": quantization_config is not a valid GPTQ config (", e.what(), ")");
    }
    if (bits_ != 2 && bits_ != 3 && bits_ != 4 && bits_ != 8)
      fail_input(config_path, ": GPTQ bits ", bits_, " is not supported (2, 3, 4, 8)");
    config_path_ = config_path;
    index(".qweight", {".qweight", ".qzeros", ".scales", ".g_idx"});
  }

 protected:
  Tensor dequantize(const std::string& m) const override {
    int bits = bits_;
    for (const auto& d : dynamic_)
      if (re_match(d.pattern, m, config_path_)) {
        bits = d.bits;
        break;
      }
    const Tensor qweight = need(m, ".qweight"), qzeros = need(m, ".qzeros"),
                 scales_t = need(m, ".scales");
    expect_dtype(qweight, {DType::I32}, dir_, m + ".qweight");
    expect_dtype(qzeros, {DType::I32}, dir_, m + ".qzeros");
    expect_dtype(scales_t, {DType::F16, DType::BF16, DType::F32}, dir_, m + ".scales");
    if (qweight.ndim() != 2 || scales_t.ndim() != 2)
      fail_input(dir_, ": tensor '", m, ".qweight' or '.scales' is not 2-D");
    const int64_t out = qweight.dim(1);
    if ((qweight.dim(0) * 32) % bits != 0)
      fail_input(dir_, ": tensor '", m, ".qweight' has ", qweight.dim(0), " rows, not a whole number of ",
                 bits, "-bit input features");
    const int64_t in = qweight.dim(0) * 32 / bits;
    const int64_t ng = scales_t.dim(0);
    expect_shape(scales_t, {ng, out}, dir_, m + ".scales");
    expect_shape(qzeros, {ng, (out * bits + 31) / 32}, dir_, m + ".qzeros");
    std::vector<int32_t> g_idx(static_cast<size_t>(in));
    if (store_.contains(m + ".g_idx")) {
      const Tensor gi = store_.get(m + ".g_idx");
      expect_dtype(gi, {DType::I32, DType::I64}, dir_, m + ".g_idx");
      expect_shape(gi, {in}, dir_, m + ".g_idx");
      for (int64_t c = 0; c < in; ++c)
        g_idx[size_t(c)] = gi.dtype() == DType::I32 ? gi.data<int32_t>()[c]
                                                    : int32_t(gi.data<int64_t>()[c]);
    } else {
      const int64_t gw = (in + ng - 1) / ng;
      for (int64_t c = 0; c < in; ++c) g_idx[size_t(c)] = int32_t(c / gw);
    }
    for (int64_t c = 0; c < in; ++c)
      if (g_idx[size_t(c)] < 0 || g_idx[size_t(c)] >= ng)
        fail_input(dir_, ": tensor '", m, ".g_idx' entry ", c, " = ", g_idx[size_t(c)],
                   " is outside [0, ", ng, ")");
    const std::vector<float> scales = as_f32(scales_t);

    // Zero points [ng, out]: packed along out (B.4); v1 stores zero − 1.
    std::vector<float> zeros(size_t(ng * out));
    const int64_t zcols = qzeros.dim(1);
    for (int64_t g = 0; g < ng; ++g)
      for (int64_t o = 0; o < out; ++o) {
        const uint32_t f = stream_field(qzeros.data<int32_t>() + g * zcols, 1, o, bits);
        zeros[size_t(g * out + o)] = float(v2_ ? f : f + 1);
      }

    Tensor w = Tensor::zeros(DType::F32, {out, in});
    float* wp = w.data<float>();
    const int32_t* qw = qweight.data<int32_t>();
    for (int64_t o = 0; o < out; ++o)
      for (int64_t c = 0; c < in; ++c) {
        const int64_t g = g_idx[size_t(c)];
        const float q = float(stream_field(qw + o, out, c, bits));
        wp[o * in + c] = scales[size_t(g * out + o)] * (q - zeros[size_t(g * out + o)]);
      }
    return w;
  }

 private:
  struct Dynamic {
    std::string pattern;
    int bits;
  };
  int bits_ = 4;
  bool v2_ = false;
  std::vector<Dynamic> dynamic_;
  std::string config_path_;
};

// -------------------------------------------------------------- compressed-tensors

class CompressedTensorsSource final : public PackedSource {
 public:
  CompressedTensorsSource(const std::string& dir, const nlohmann::json& qc,
                          const std::string& config_path)
      : PackedSource(dir, TensorStore::open(dir)), config_path_(config_path) {
    try {
      const std::string global_format = qc.value("format", std::string("dense"));
      for (const auto& [name, scheme] : qc.at("config_groups").items()) {
        std::string fmt = global_format;
        if (scheme.contains("format") && scheme["format"].is_string()) fmt = scheme["format"].get<std::string>();
        if (fmt != "pack-quantized" && fmt != "int-quantized")
          fail_input(config_path, ": compressed-tensors format '", fmt, "' (config group ", name,
                     ") is not supported for reading; qshard reads pack-quantized and int-quantized");
        const auto& w = scheme.at("weights");
        Scheme s;
        s.format = fmt;
        s.bits = w.value("num_bits", 8);
        s.symmetric = w.value("symmetric", true);
        if (w.value("type", std::string("int")) != "int")
          fail_input(config_path, ": config group ", name, " has weights of type '",
                     w.value("type", std::string()), "'; qshard reads int weights");
        if (s.bits < 1 || s.bits > 8)
          fail_input(config_path, ": config group ", name, " num_bits ", s.bits, " is not in 1..8");
        for (const auto& t : scheme.at("targets")) s.targets.push_back(t.get<std::string>());
        schemes_.push_back(s);
      }
    } catch (const nlohmann::json::exception& e) {
      fail_input(config_path, ": quantization_config is not a valid compressed-tensors config (",
                 e.what(), ")");
    }
    if (schemes_.empty()) fail_input(config_path, ": compressed-tensors config has no config_groups");
    index(".weight_packed", {".weight_packed", ".weight_scale", ".weight_zero_point",
                             ".weight_shape", ".weight_g_idx"});
    index_int_quantized();
  }

 protected:
  struct Scheme {
    std::string format;  // pack-quantized, int-quantized
    int bits = 8;
    bool symmetric = true;
    std::vector<std::string> targets;
  };

  // int-quantized modules (D.6): "<m>.weight" stored as I8 next to "<m>.weight_scale".
  // Their weight name stays; scale, zero point and g_idx are hidden behind it.
  void index_int_quantized() {
    static const char* kParams[] = {".weight_scale", ".weight_zero_point", ".weight_g_idx"};
    for (const auto& n : store_.names()) {
      if (!ends_with(n, ".weight_scale")) continue;
      const std::string m = n.substr(0, n.size() - 13);
      if (modules_.count(m) || !store_.contains(m + ".weight")) continue;
      if (store_.get(m + ".weight").dtype() != DType::I8) continue;
      int_modules_.insert(m);
      modules_.insert(m);
    }
    std::vector<std::string> kept;
    for (const auto& n : names_) {
      bool hidden = false;
      for (const char* p : kParams)
        if (ends_with(n, p) && int_modules_.count(n.substr(0, n.size() - std::string(p).size())))
          hidden = true;
      if (!hidden) kept.push_back(n);
    }
    names_ = std::move(kept);
    view_ = std::set<std::string>(names_.begin(), names_.end());
  }

  // g_idx of a module with `in` columns in `ng` groups: stored, or the contiguous one.
  std::vector<int32_t> read_g_idx(const std::string& m, int64_t in, int64_t ng) const {
    std::vector<int32_t> g_idx(static_cast<size_t>(in));
    if (store_.contains(m + ".weight_g_idx")) {
      const Tensor gi = store_.get(m + ".weight_g_idx");
      expect_dtype(gi, {DType::I32, DType::I64}, dir_, m + ".weight_g_idx");
      expect_shape(gi, {in}, dir_, m + ".weight_g_idx");
      for (int64_t c = 0; c < in; ++c) {
        const int64_t g = gi.dtype() == DType::I32 ? gi.data<int32_t>()[c] : gi.data<int64_t>()[c];
        if (g < 0 || g >= ng)
          fail_input(dir_, ": tensor '", m, ".weight_g_idx' entry ", c, " = ", g,
                     " is outside [0, ", ng, ")");
        g_idx[size_t(c)] = int32_t(g);
      }
    } else {
      for (int64_t c = 0; c < in; ++c) g_idx[size_t(c)] = int32_t(c / (in / ng));
    }
    return g_idx;
  }

  // int-quantized: w = scale · (q − zp), q the signed int8 value, zp 0 when symmetric.
  Tensor dequantize_int(const std::string& m, const Scheme& s) const {
    if (s.format != "int-quantized")
      fail_input(dir_, ": module ", m, " is stored int-quantized (I8 weight) but its config group "
                 "says '", s.format, "'");
    const Tensor q = store_.get(m + ".weight"), scale_t = need(m, ".weight_scale");
    expect_dtype(scale_t, {DType::BF16, DType::F16, DType::F32}, dir_, m + ".weight_scale");
    if (q.ndim() != 2) fail_input(dir_, ": tensor '", m, ".weight' is not 2-D");
    const int64_t out = q.dim(0), in = q.dim(1);
    if (scale_t.ndim() != 2 || scale_t.dim(0) != out || scale_t.dim(1) <= 0 || in % scale_t.dim(1) != 0)
      fail_input(dir_, ": tensor '", m, ".weight_scale' has shape ", shape_str(scale_t.shape()),
                 ", expected [", out, ", n_groups] with n_groups dividing ", in);
    const int64_t ng = scale_t.dim(1);
    const std::vector<int32_t> g_idx = read_g_idx(m, in, ng);
    const std::vector<float> scales = as_f32(scale_t);
    std::vector<float> zp(size_t(out * ng), 0.0f);
    if (!s.symmetric) {
      const Tensor z = need(m, ".weight_zero_point");
      expect_dtype(z, {DType::I8, DType::I32}, dir_, m + ".weight_zero_point");
      expect_shape(z, {out, ng}, dir_, m + ".weight_zero_point");
      for (int64_t i = 0; i < out * ng; ++i)
        zp[size_t(i)] = float(z.dtype() == DType::I8 ? z.data<int8_t>()[i] : z.data<int32_t>()[i]);
    }
    const int lo = -(1 << (s.bits - 1)), hi = (1 << (s.bits - 1)) - 1;
    Tensor w = Tensor::zeros(DType::F32, {out, in});
    float* wp = w.data<float>();
    const int8_t* qp = q.data<int8_t>();
    for (int64_t o = 0; o < out; ++o)
      for (int64_t c = 0; c < in; ++c) {
        const int v = qp[o * in + c];
        if (v < lo || v > hi)
          fail_input(dir_, ": tensor '", m, ".weight' holds ", v, " at [", o, ", ", c,
                     "], outside the ", s.bits, "-bit range [", lo, ", ", hi, "]");
        const int64_t k = o * ng + g_idx[size_t(c)];
        wp[o * in + c] = scales[size_t(k)] * (float(v) - zp[size_t(k)]);
      }
    return w;
  }

  // compressed-tensors' precedence: a target naming the module (exactly or "re:") beats
  // a class-name target such as "Linear" (every packed module here is a Linear).
  const Scheme& scheme_for(const std::string& m) const {
    for (const auto& s : schemes_)
      for (const auto& t : s.targets)
        if (t == m || (t.rfind("re:", 0) == 0 && re_match(t.substr(3), m, config_path_))) return s;
    for (const auto& s : schemes_)
      for (const auto& t : s.targets)
        if (t == "Linear") return s;
    fail_input(config_path_, ": no config group targets module ", m,
               ", which has packed weights in ", dir_);
  }

  Tensor dequantize(const std::string& m) const override {
    const Scheme& s = scheme_for(m);
    if (int_modules_.count(m)) return dequantize_int(m, s);
    if (s.format != "pack-quantized")
      fail_input(dir_, ": module ", m, " is stored pack-quantized but its config group says '",
                 s.format, "'");
    const int bits = s.bits;
    const Tensor packed = need(m, ".weight_packed"), scale_t = need(m, ".weight_scale"),
                 shape_t = need(m, ".weight_shape");
    expect_dtype(packed, {DType::I32}, dir_, m + ".weight_packed");
    expect_dtype(scale_t, {DType::BF16, DType::F16, DType::F32}, dir_, m + ".weight_scale");
    expect_dtype(shape_t, {DType::I64, DType::I32}, dir_, m + ".weight_shape");
    if (shape_t.numel() != 2) fail_input(dir_, ": tensor '", m, ".weight_shape' must hold 2 values");
    const int64_t out = shape_t.dtype() == DType::I64 ? shape_t.data<int64_t>()[0] : shape_t.data<int32_t>()[0];
    const int64_t in = shape_t.dtype() == DType::I64 ? shape_t.data<int64_t>()[1] : shape_t.data<int32_t>()[1];
    if (out <= 0 || in <= 0) fail_input(dir_, ": tensor '", m, ".weight_shape' = [", out, ", ", in, "]");
    const int64_t cols = (in * bits + 31) / 32;
    expect_shape(packed, {out, cols}, dir_, m + ".weight_packed");
    if (scale_t.ndim() != 2 || scale_t.dim(0) != out)
      fail_input(dir_, ": tensor '", m, ".weight_scale' has shape ", shape_str(scale_t.shape()),
                 ", expected [", out, ", n_groups]");
    const int64_t ng = scale_t.dim(1);
    if (ng <= 0 || in % ng != 0)
      fail_input(dir_, ": tensor '", m, ".weight_scale' has ", ng, " groups for ", in, " columns");
    const std::vector<int32_t> g_idx = read_g_idx(m, in, ng);
    const std::vector<float> scales = as_f32(scale_t);

    // Zero points as stored fields (D.3: signed zp + 2^(bits−1)); symmetric: the offset.
    std::vector<float> zeros(size_t(out * ng), float(1 << (bits - 1)));
    if (!s.symmetric) {
      const Tensor zp = need(m, ".weight_zero_point");
      expect_dtype(zp, {DType::I32}, dir_, m + ".weight_zero_point");
      expect_shape(zp, {(out * bits + 31) / 32, ng}, dir_, m + ".weight_zero_point");
      for (int64_t g = 0; g < ng; ++g)
        for (int64_t o = 0; o < out; ++o)
          zeros[size_t(o * ng + g)] = float(stream_field(zp.data<int32_t>() + g, ng, o, bits));
    }

    Tensor w = Tensor::zeros(DType::F32, {out, in});
    float* wp = w.data<float>();
    for (int64_t o = 0; o < out; ++o) {
      const int32_t* row = packed.data<int32_t>() + o * cols;
      for (int64_t c = 0; c < in; ++c) {
        const int64_t k = o * ng + g_idx[size_t(c)];
        wp[o * in + c] = scales[size_t(k)] * (float(stream_field(row, 1, c, bits)) - zeros[size_t(k)]);
      }
    }
    return w;
  }

 private:
  std::string config_path_;
  std::vector<Scheme> schemes_;
  std::set<std::string> int_modules_;
};

// ------------------------------------------------------------------------------- AWQ

// AutoAWQ GEMM (formats.md C): qweight I32 [in, out/8] and qzeros I32 [ng, out/8] hold
// output channel 8j + kAwqOrder[k] of word j in nibble k; scales F16 [ng, out];
// w = scale · (q − zero).
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

class AwqSource final : public PackedSource {
 public:
  AwqSource(const std::string& dir, const nlohmann::json& qc, const std::string& config_path)
      : PackedSource(dir, TensorStore::open(dir)) {
    try {
      const int bits = qc.contains("bits") ? qc["bits"].get<int>() : qc.value("w_bit", 4);
      const std::string version = lower(qc.value("version", std::string("gemm")));
      if (bits != 4) fail_input(config_path, ": AWQ bits ", bits, " is not supported (4)");
      if (version != "gemm")
        fail_input(config_path, ": AWQ version '", version, "' is not supported for reading (gemm)");
      if (!qc.value("zero_point", true))
        fail_input(config_path, ": AWQ without zero points is not supported for reading");
    } catch (const nlohmann::json::exception& e) {
      fail_input(config_path, ": quantization_config is not a valid AWQ config (", e.what(), ")");
    }
    index(".qweight", {".qweight", ".qzeros", ".scales"});
  }

 protected:
  Tensor dequantize(const std::string& m) const override {
    const Tensor qweight = need(m, ".qweight"), qzeros = need(m, ".qzeros"), scales_t = need(m, ".scales");
    expect_dtype(qweight, {DType::I32}, dir_, m + ".qweight");
    expect_dtype(qzeros, {DType::I32}, dir_, m + ".qzeros");
    expect_dtype(scales_t, {DType::F16, DType::BF16, DType::F32}, dir_, m + ".scales");
    if (qweight.ndim() != 2 || scales_t.ndim() != 2)
      fail_input(dir_, ": tensor '", m, ".qweight' or '.scales' is not 2-D");
    const int64_t in = qweight.dim(0), out = qweight.dim(1) * 8, ng = scales_t.dim(0);
    expect_shape(scales_t, {ng, out}, dir_, m + ".scales");
    expect_shape(qzeros, {ng, out / 8}, dir_, m + ".qzeros");
    if (ng <= 0 || in % ng != 0)
      fail_input(dir_, ": tensor '", m, ".scales' has ", ng, " groups for ", in, " input features");
    const int64_t gw = in / ng;
    const std::vector<float> scales = as_f32(scales_t);
    auto field = [](const int32_t* words, int64_t cols, int64_t row, int64_t ch) {
      const int64_t j = ch / 8;
      int k = 0;
      while (kAwqOrder[k] != ch % 8) ++k;
      return float((uint32_t(words[row * cols + j]) >> (4 * k)) & 0xFu);
    };
    Tensor w = Tensor::zeros(DType::F32, {out, in});
    float* wp = w.data<float>();
    const int32_t* qw = qweight.data<int32_t>();
    const int32_t* qz = qzeros.data<int32_t>();
    for (int64_t c = 0; c < in; ++c) {
      const int64_t g = c / gw;
      for (int64_t o = 0; o < out; ++o)
        wp[o * in + c] = scales[size_t(g * out + o)] * (field(qw, out / 8, c, o) - field(qz, out / 8, g, o));
    }
    return w;
  }
};

// ------------------------------------------------------------------------ qshard-hdf5

// E2M1 magnitudes by the low three bits; bit 3 is the sign (formats.md D.7, F.2).
constexpr float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

class Hdf5Source final : public TensorSource {
 public:
  Hdf5Source(const std::string& path) : path_(path), file_(H5File::open_read(path)) {
    const H5Group root = file_.root();
    if (!root.has_attr("layout") || root.attr_string("layout") != "qshard-hdf5")
      fail_input(path, ": not a qshard-hdf5 file (root attribute 'layout' missing)");
    const int64_t version = root.attr_int("layout_version");
    if (version != 1)
      fail_input(path, ": qshard-hdf5 layout version ", version, " is not supported (1)");
    for (const auto& child : root.children()) {
      if (!root.is_group(child)) continue;
      if (child == "dense") {
        const H5Group dense = root.open_group("dense");
        for (const auto& n : dense.children()) {
          dense_.insert(n);
          names_.push_back(n);
        }
      } else if (root.has_attr("kind", child) && root.attr_string("kind", child) == "quantized_linear") {
        modules_.insert(child);
      }
    }
    for (const auto& m : modules_) {
      if (dense_.count(m + ".weight"))
        fail_input(path, ": module ", m, " has both a dense weight and a quantized group");
      names_.push_back(m + ".weight");
    }
  }

  bool contains(const std::string& name) const override {
    return dense_.count(name) || (ends_with(name, ".weight") && modules_.count(module_of(name)));
  }
  std::vector<std::string> names() const override { return names_; }

  Tensor get(const std::string& name) const override {
    std::lock_guard<std::mutex> lock(mu_);  // the HDF5 library is not thread-safe
    if (dense_.count(name)) return read_dense(name);
    if (ends_with(name, ".weight") && modules_.count(module_of(name)))
      return read_module(module_of(name));
    fail_input(path_, ": tensor '", name, "' is not in this checkpoint");
  }

 private:
  static std::string module_of(const std::string& weight) { return weight.substr(0, weight.size() - 7); }

  Tensor read_dense(const std::string& name) const {
    const H5Group dense = file_.root().open_group("dense");
    const std::string dt = dense.attr_string("dtype", name);
    const auto dtype = dtype_from_name(dt);
    if (!dtype) fail_input(path_, ":/dense/", name, ": unknown dtype attribute '", dt, "'");
    const H5DatasetInfo info = dense.dataset_info(name);
    if (h5_type_size(info.type) != dtype_size(*dtype))
      fail_input(path_, ":/dense/", name, ": stored as ", h5_type_name(info.type),
                 ", which cannot hold ", dt);
    Tensor t = Tensor::zeros(*dtype, info.shape);
    dense.read_dataset(name, info.type, t.raw(), t.nbytes());
    return t;
  }

  Tensor read_module(const std::string& m) const {
    const H5Group g = file_.root().open_group(m);
    const std::string where = path_ + ":/" + m;
    const std::string family = g.attr_string("family");
    const int bits = int(g.attr_int("bits"));
    const bool symmetric = g.attr_int("symmetric") != 0;
    const H5DatasetInfo ci = g.dataset_info("codes");
    if (ci.shape.size() != 2) fail_input(where, "/codes: expected [out, in], got ", shape_str(ci.shape));
    const int64_t out = ci.shape[0], in = ci.shape[1];
    const H5DatasetInfo si = g.dataset_info("scales");
    if (si.shape.size() != 2 || si.shape[0] != out || si.shape[1] <= 0)
      fail_input(where, "/scales: shape ", shape_str(si.shape), " does not fit codes ", shape_str(ci.shape));
    const int64_t ng = si.shape[1];
    if (bits < 2 || bits > 8) fail_input(where, ": bits ", bits, " outside 2..8");

    std::vector<uint8_t> codes(size_t(out * in));
    g.read_dataset("codes", H5Type::U8, codes.data(), codes.size());
    std::vector<float> scales(size_t(out * ng));
    g.read_dataset("scales", H5Type::F32, scales.data(), scales.size() * 4);
    std::vector<int32_t> g_idx(static_cast<size_t>(in));
    g.read_dataset("g_idx", H5Type::I32, g_idx.data(), g_idx.size() * 4);
    for (int64_t c = 0; c < in; ++c)
      if (g_idx[size_t(c)] < 0 || g_idx[size_t(c)] >= ng)
        fail_input(where, "/g_idx: entry ", c, " = ", g_idx[size_t(c)], " outside [0, ", ng, ")");
    float tensor_scale = 1.0f;
    if (g.has("tensor_scale")) g.read_dataset("tensor_scale", H5Type::F32, &tensor_scale, 4);

    Tensor w = Tensor::zeros(DType::F32, {out, in});
    float* wp = w.data<float>();
    const uint32_t mask = (1u << bits) - 1;
    if (family == "int") {
      std::vector<float> zeros(size_t(out * ng), float(1 << (bits - 1)));
      if (!symmetric) g.read_dataset("zeros", H5Type::F32, zeros.data(), zeros.size() * 4);
      for (int64_t o = 0; o < out; ++o)
        for (int64_t c = 0; c < in; ++c) {
          const int64_t k = o * ng + g_idx[size_t(c)];
          wp[o * in + c] = scales[size_t(k)] * (float(codes[size_t(o * in + c)] & mask) - zeros[size_t(k)]);
        }
    } else if (family == "mxint") {
      // k-bit two's complement k, value k · 2^−(bits−2) · scale (formats.md F.4).
      for (int64_t o = 0; o < out; ++o)
        for (int64_t c = 0; c < in; ++c) {
          int32_t k = int32_t(codes[size_t(o * in + c)] & mask);
          if (k & (1 << (bits - 1))) k -= 1 << bits;
          wp[o * in + c] = std::ldexp(float(k), -(bits - 2)) * scales[size_t(o * ng + g_idx[size_t(c)])];
        }
    } else if (family == "mxfp4" || family == "nvfp4") {
      const bool nv = family == "nvfp4";
      for (int64_t o = 0; o < out; ++o)
        for (int64_t c = 0; c < in; ++c) {
          const uint8_t code = codes[size_t(o * in + c)];
          const float e = (code & 0x8) ? -kE2M1[code & 0x7] : kE2M1[code & 0x7];
          const float v = e * scales[size_t(o * ng + g_idx[size_t(c)])];
          wp[o * in + c] = nv ? v * tensor_scale : v;
        }
    } else {
      fail_input(where, ": unknown format family '", family, "'");
    }
    return w;
  }

  std::string path_;
  H5File file_;
  std::set<std::string> dense_, modules_;
  std::vector<std::string> names_;
  mutable std::mutex mu_;
};

}  // namespace

std::unique_ptr<TensorSource> open_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return std::make_unique<TensorStore>(TensorStore::open(dir));
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!path_exists(config_path)) return std::make_unique<TensorStore>(TensorStore::open(dir));
  const nlohmann::json cfg = read_json_file(config_path);
  if (!cfg.is_object()) fail_input(config_path, ": expected a JSON object");
  const auto it = cfg.find("quantization_config");
  if (it == cfg.end() || it->is_null()) return std::make_unique<TensorStore>(TensorStore::open(dir));
  const nlohmann::json& qc = *it;
  if (!qc.is_object() || !qc.contains("quant_method") || !qc["quant_method"].is_string())
    fail_input(config_path, ": quantization_config has no quant_method string");
  const std::string method = lower(qc["quant_method"].get<std::string>());
  if (method == "fakequant") return std::make_unique<TensorStore>(TensorStore::open(dir));
  if (method == "gptq") return std::make_unique<GptqSource>(dir, qc, config_path);
  if (method == "compressed-tensors")
    return std::make_unique<CompressedTensorsSource>(dir, qc, config_path);
  if (method == "awq") return std::make_unique<AwqSource>(dir, qc, config_path);
  if (method == "qshard-hdf5") {
    const std::string file = qc.value("file", std::string("model.h5"));
    if (file.empty() || file.find('/') != std::string::npos)
      fail_input(config_path, ": quantization_config.file '", file, "' must be a file name in ", dir);
    return std::make_unique<Hdf5Source>((fs::path(dir) / file).string());
  }
  fail_input(config_path, ": quantization_config.quant_method '", method,
             "' is not supported for reading: qshard reads plain and fake-quant checkpoints, "
             "gptq, awq (gemm), compressed-tensors (pack-quantized, int-quantized) and qshard-hdf5");
}

}  // namespace qshard
