// compressed-tensors "pack-quantized" checkpoints, as llm-compressor writes them and vLLM's
// CompressedTensorsWNA16 reads them (formats.md D.1, D.3-D.5). Per quantized Linear:
//   weight_packed     I32 [out, ceil(in·bits/32)]  packed along in, LSB-first (D.3)
//   weight_scale      model dtype [out, n_groups]   ([out, 1] per channel)
//   weight_zero_point I32 [ceil(out·bits/32), n_groups], packed along out (asymmetric only)
//   weight_shape      I64 [2] = (out, in)
//   weight_g_idx      I32 [in]                      (actorder "group" only)
// compressed-tensors' codes are signed, q − 2^(bits−1), stored with the offset 2^(bits−1)
// added back: the stored field is our unsigned code, and the stored zero point is our
// zero. Symmetric zero points are not stored (the reader's is 2^(bits−1)).
//
// With activation quantization (--act-format int8) the checkpoint is "int-quantized", as
// llm-compressor writes W8A8 / W4A8 (compressed-tensors naive_quantized/base.py
// IntQuantizationCompressor; vLLM CompressedTensorsW8A8Int8 / CompressedTensorsW4A8Int):
//   weight        I8 [out, in]   the signed code q = code − 2^(bits−1), unpacked (also 4-bit)
//   weight_scale  model dtype [out, n_groups]   ([out, 1] per channel)
// and every config group gets input_activations {8-bit int, symmetric, strategy token,
// dynamic}. vLLM takes W8A8 with per-channel symmetric int8 weights and W4A8 with
// symmetric int4 weights per group or channel; check_export_supports_act refuses the rest.
#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "export/export_common.h"
#include "export/shard_output.h"

namespace qshard::exporting {

namespace {

struct FormatGroup {
  QuantFormat format;
  std::vector<std::string> modules;
  bool actorder = false;
};

bool same_int_layout(const QuantFormat& a, const QuantFormat& b) {
  return a.bits == b.bits && a.group_size == b.group_size && a.symmetric == b.symmetric;
}

// llm-compressor's INT8 dynamic per-token activation args (quant_scheme.py INT8_W8A8; a
// dynamic scheme has no observer).
nlohmann::json int8_token_args() {
  return {{"num_bits", 8},          {"type", "int"},       {"symmetric", true},
          {"strategy", "token"},    {"group_size", nullptr}, {"dynamic", true},
          {"actorder", nullptr},    {"block_structure", nullptr}, {"observer", nullptr},
          {"observer_kwargs", nlohmann::json::object()}};
}

nlohmann::json weight_args(const FormatGroup& g) {
  const bool channel = g.format.group_size == -1;
  nlohmann::json w;
  w["num_bits"] = g.format.bits;
  w["type"] = "int";
  w["symmetric"] = g.format.symmetric;
  w["strategy"] = channel ? "channel" : "group";
  w["group_size"] = channel ? nlohmann::json(nullptr) : nlohmann::json(g.format.group_size);
  w["dynamic"] = false;
  w["actorder"] = g.actorder && !channel ? nlohmann::json("group") : nlohmann::json(nullptr);
  w["block_structure"] = nullptr;
  w["observer"] = "minmax";
  w["observer_kwargs"] = nlohmann::json::object();
  return w;
}

class CompressedTensorsExporter final : public Exporter {
 public:
  CompressedTensorsExporter(const std::string& out_dir, uint64_t max_shard_bytes, ActFormat act,
                            const WriteSplit* split)
      : out_dir_(out_dir), out_(out_dir, max_shard_bytes, split), act_(act) {}

  void add_dense(const std::string& name, const Tensor& t) override {
    QS_ASSERT(!finished_, "add_dense after finish");
    dense_.see(t);
    if (name == "lm_head.weight") dense_lm_head_ = true;
    out_.add(name, t);
  }

  void add_quantized(const std::string& module, const QuantizedLinear& q) override {
    QS_ASSERT(!finished_, "add_quantized after finish");
    try {
      check_export_supports(ExportKind::CompressedTensors, q.format, false);
      check_export_supports_act(ExportKind::CompressedTensors, act_, q.format, q.has_act_order_g_idx());
    } catch (const InputError& e) {
      fail_input("module ", module, ": ", e.what());
    }
    validate_quantized(module, q);
    if (groups_.empty()) scale_dtype_ = dense_.get();  // one scale dtype for the checkpoint
    const int bits = q.format.bits;
    const int64_t in = q.in_features, out = q.out_features, ng = q.n_groups();
    Tensor scale = scale_tensor(module, q);
    if (act_ != ActFormat::None) {
      // int-quantized: signed codes, one per int8, no packing, no shape tensor.
      Tensor w = Tensor::zeros(DType::I8, {out, in});
      const int offset = 1 << (bits - 1);
      for (int64_t i = 0; i < out * in; ++i) w.data<int8_t>()[i] = int8_t(int(q.codes[size_t(i)]) - offset);
      group_of(q.format).modules.push_back(module);
      if (!out_.mine(module + ".weight")) return;  // another rank writes this module
      out_.add(module + ".weight", w);
      out_.add(module + ".weight_scale", scale);
      return;
    }

    // Bookkeeping for quantization_config on every rank; bytes only on the owner.
    FormatGroup& group = group_of(q.format);
    group.modules.push_back(module);
    if (q.has_act_order_g_idx()) {
      group.actorder = true;
      if (out_.mine(module + ".weight_g_idx")) add_g_idx(module, g_idx_or_default(q));
    } else {
      trivial_g_idx_.push_back({module, {in, q.format.group_width(in)}});
    }
    if (!out_.mine(module + ".weight_packed")) return;  // another rank writes this module

    const int64_t cols = (in * bits + 31) / 32;
    Tensor packed = Tensor::zeros(DType::I32, {out, cols});
    for (int64_t o = 0; o < out; ++o) {
      const std::vector<int32_t> words = pack_words(q.codes.data() + o * in, in, bits);
      std::copy(words.begin(), words.end(), packed.data<int32_t>() + o * cols);
    }


    Tensor shape = Tensor::zeros(DType::I64, {2});
    shape.data<int64_t>()[0] = out;
    shape.data<int64_t>()[1] = in;

    out_.add(module + ".weight_packed", packed);
    out_.add(module + ".weight_scale", scale);
    if (!q.format.symmetric) {
      const std::vector<int32_t> zeros = int_zero_points(q);
      const int64_t zrows = (out * bits + 31) / 32;
      Tensor zp = Tensor::zeros(DType::I32, {zrows, ng});
      std::vector<uint8_t> fields(static_cast<size_t>(out));
      for (int64_t g = 0; g < ng; ++g) {
        for (int64_t o = 0; o < out; ++o) fields[size_t(o)] = uint8_t(zeros[size_t(o * ng + g)]);
        const std::vector<int32_t> words = pack_words(fields.data(), out, bits);
        for (int64_t r = 0; r < zrows; ++r) zp.data<int32_t>()[r * ng + g] = words[size_t(r)];
      }
      out_.add(module + ".weight_zero_point", zp);
    }
    out_.add(module + ".weight_shape", shape);
  }

  void finish(const ExportInfo& info) override {
    QS_ASSERT(!finished_, "finish called twice");
    // actorder "group" is a property of the scheme: every module under it needs its
    // weight_g_idx, also those whose g_idx happened to be trivial.
    for (const auto& [module, geometry] : trivial_g_idx_)
      for (const FormatGroup& g : groups_)
        if (g.actorder && std::find(g.modules.begin(), g.modules.end(), module) != g.modules.end()) {
          const auto [in, gw] = geometry;
          std::vector<int32_t> gi(static_cast<size_t>(in));
          for (int64_t c = 0; c < in; ++c) gi[size_t(c)] = int32_t(c / gw);
          if (out_.mine(module + ".weight_g_idx")) add_g_idx(module, gi);
        }
    trivial_g_idx_.clear();

    if (groups_.empty()) {
      if (info.format.family != FormatFamily::Int)
        fail_input("--export compressed-tensors: nothing was quantized and --format ",
                   info.format.name(), " is not an INT format");
      groups_.push_back({info.format, {}, false});
    }
    // The group of the run's --format targets every Linear; other formats (a recipe's
    // per-module overrides) target their modules by name, which matches first.
    size_t main = 0;
    for (size_t i = 0; i < groups_.size(); ++i)
      if (same_int_layout(groups_[i].format, info.format)) main = i;
    if (!same_int_layout(groups_[main].format, info.format))
      for (size_t i = 0; i < groups_.size(); ++i)
        if (groups_[i].modules.size() > groups_[main].modules.size()) main = i;

    nlohmann::json config_groups = nlohmann::json::object();
    int index = 0;
    auto add_group = [&](const FormatGroup& g, nlohmann::json targets) {
      nlohmann::json scheme;
      scheme["targets"] = std::move(targets);
      scheme["weights"] = weight_args(g);
      scheme["input_activations"] = act_ == ActFormat::Int8 ? int8_token_args() : nlohmann::json(nullptr);
      scheme["output_activations"] = nullptr;
      config_groups["group_" + std::to_string(index++)] = scheme;
    };
    add_group(groups_[main], nlohmann::json::array({"Linear"}));
    for (size_t i = 0; i < groups_.size(); ++i)
      if (i != main) add_group(groups_[i], groups_[i].modules);

    std::vector<std::string> ignore;
    auto quantized = [&](const std::string& m) {
      for (const auto& g : groups_)
        if (std::find(g.modules.begin(), g.modules.end(), m) != g.modules.end()) return true;
      return false;
    };
    for (const auto& m : info.ignored_modules)
      if (!quantized(m) && std::find(ignore.begin(), ignore.end(), m) == ignore.end())
        ignore.push_back(m);
    if (dense_lm_head_ && !quantized("lm_head") &&
        std::find(ignore.begin(), ignore.end(), "lm_head") == ignore.end())
      ignore.push_back("lm_head");

    nlohmann::json qc;
    qc["quant_method"] = "compressed-tensors";
    qc["format"] = act_ == ActFormat::None ? "pack-quantized" : "int-quantized";
    qc["quantization_status"] = "compressed";
    qc["global_compression_ratio"] = nullptr;
    qc["kv_cache_scheme"] = nullptr;
    qc["sparsity_config"] = nlohmann::json::object();
    qc["ignore"] = ignore;
    qc["config_groups"] = config_groups;

    const std::function<void()> commit = out_.close();
    finished_ = true;
    if (out_.finishes_directory()) finish_output(out_dir_, info, commit, qc);
  }

 private:
  Tensor scale_tensor(const std::string& module, const QuantizedLinear& q) const {
    const int64_t ng = q.n_groups();
    for (size_t i = 0; i < q.scales.size(); ++i) {
      const float back = round_through(q.scales[i], scale_dtype_);
      if (!std::isfinite(back) || !(back > 0.0f))
        fail_input("module ", module, ": scale ", q.scales[i], " (row ", int64_t(i) / ng,
                   ", group ", int64_t(i) % ng, ") does not survive rounding to ",
                   dtype_name(scale_dtype_), ", the checkpoint dtype compressed-tensors "
                   "stores scales in: use --export hdf5 (F32 scales)");
    }
    return f32_to_dtype(q.scales.data(), {q.out_features, ng}, scale_dtype_);
  }

  FormatGroup& group_of(const QuantFormat& f) {
    for (auto& g : groups_)
      if (same_int_layout(g.format, f)) return g;
    groups_.push_back({f, {}, false});
    return groups_.back();
  }

  void add_g_idx(const std::string& module, const std::vector<int32_t>& gi) {
    Tensor t = Tensor::zeros(DType::I32, {int64_t(gi.size())});
    std::copy(gi.begin(), gi.end(), t.data<int32_t>());
    out_.add(module + ".weight_g_idx", t);
  }

  std::string out_dir_;
  ShardedOutput out_;
  DenseDType dense_;
  DType scale_dtype_ = DType::BF16;
  ActFormat act_ = ActFormat::None;
  bool dense_lm_head_ = false;
  std::vector<FormatGroup> groups_;
  // Modules written without weight_g_idx: (name, (in_features, group width)).
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> trivial_g_idx_;
  bool finished_ = false;
};

}  // namespace

std::unique_ptr<Exporter> make_compressed_tensors_exporter(const std::string& out_dir,
                                                           uint64_t max_shard_bytes, ActFormat act,
                                                           const WriteSplit* split) {
  return std::make_unique<CompressedTensorsExporter>(out_dir, max_shard_bytes, act, split);
}

}  // namespace qshard::exporting
