// GPTQ checkpoints as AutoGPTQ / GPTQModel write them (formats.md B): per quantized
// Linear qweight I32 [in·bits/32, out] (packed along in, B.3), qzeros I32
// [n_groups, out·bits/32] (packed along out, B.4), scales F16 [n_groups, out], g_idx I32
// [in]; quantize_config.json and config.json["quantization_config"] (B.6).
//
// Zero points: symmetric exports are "gptq" (v1: stored zero − 1, exact because the zero
// is 2^(bits−1)); an export whose first quantized module is asymmetric is "gptq_v2"
// (zeros stored as they are), because v1 cannot hold a zero of 0 for kernels that do not
// re-mask after adding the 1 back (B.4). vLLM and GPTQModel read both.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/dtype.h"
#include "core/error.h"
#include "export/export_common.h"
#include "export/shard_output.h"

namespace qshard::exporting {

namespace {

bool same_int_layout(const QuantFormat& a, const QuantFormat& b) {
  return a.bits == b.bits && a.group_size == b.group_size && a.symmetric == b.symmetric;
}

class GptqExporter final : public Exporter {
 public:
  GptqExporter(const std::string& out_dir, uint64_t max_shard_bytes, const WriteSplit* split)
      : out_dir_(out_dir), out_(out_dir, max_shard_bytes, split) {}

  void add_dense(const std::string& name, const Tensor& t) override {
    QS_ASSERT(!finished_, "add_dense after finish");
    out_.add(name, t);
  }

  void add_quantized(const std::string& module, const QuantizedLinear& q) override {
    QS_ASSERT(!finished_, "add_quantized after finish");
    try {
      check_export_supports(ExportKind::Gptq, q.format, false);
    } catch (const InputError& e) {
      fail_input("module ", module, ": ", e.what());
    }
    validate_quantized(module, q);
    const int bits = q.format.bits;
    const int64_t in = q.in_features, out = q.out_features, ng = q.n_groups();
    const int64_t multiple = 32 / std::gcd(32, bits);
    if (in % multiple != 0 || out % multiple != 0)
      fail_input("module ", module, ": shape [", out, ", ", in, "] cannot be packed as ", bits,
                 "-bit GPTQ (in and out features must be multiples of ", multiple,
                 "): use --export compressed-tensors, hdf5 or fakequant");
    if (modules_.empty()) v2_ = !q.format.symmetric;
    const uint32_t maxq = (1u << bits) - 1;
    const std::vector<int32_t> zeros = int_zero_points(q);
    if (!v2_)
      for (int32_t z : zeros)
        if (z == 0)
          fail_input("module ", module, ": an asymmetric zero point of 0 cannot be stored in a "
                     "GPTQ v1 checkpoint, which this export is because its first module was "
                     "symmetric: quantize every module asymmetric (gptq_v2) or use --export "
                     "compressed-tensors");

    modules_.push_back({module, q.format});
    act_order_ = act_order_ || q.has_act_order_g_idx();
    if (!out_.mine(module + ".qweight")) return;  // another rank writes this module

    // qweight: column o of the [in·bits/32, out] matrix is row o of the codes, packed.
    const int64_t rows = in * bits / 32;
    Tensor qweight = Tensor::zeros(DType::I32, {rows, out});
    int32_t* qw = qweight.data<int32_t>();
    for (int64_t o = 0; o < out; ++o) {
      const std::vector<int32_t> words = pack_words(q.codes.data() + o * in, in, bits);
      for (int64_t r = 0; r < rows; ++r) qw[r * out + o] = words[size_t(r)];
    }

    // qzeros: row g packs the zero points of every output for group g (v1: zero − 1).
    const int64_t zcols = out * bits / 32;
    Tensor qzeros = Tensor::zeros(DType::I32, {ng, zcols});
    std::vector<uint8_t> fields(static_cast<size_t>(out));
    for (int64_t g = 0; g < ng; ++g) {
      for (int64_t o = 0; o < out; ++o) {
        const uint32_t z = uint32_t(zeros[size_t(o * ng + g)]);
        fields[size_t(o)] = uint8_t(v2_ ? z : (z - 1) & maxq);
      }
      const std::vector<int32_t> words = pack_words(fields.data(), out, bits);
      std::copy(words.begin(), words.end(), qzeros.data<int32_t>() + g * zcols);
    }

    // scales: F16 [n_groups, out].
    Tensor scales = Tensor::zeros(DType::F16, {ng, out});
    for (int64_t o = 0; o < out; ++o)
      for (int64_t g = 0; g < ng; ++g) {
        const float s = q.scales[size_t(o * ng + g)];
        const uint16_t h = f32_to_f16(s);
        const float back = f16_to_f32(h);
        if (!std::isfinite(back) || !(back > 0.0f))
          fail_input("module ", module, ": scale ", s, " (row ", o, ", group ", g,
                     ") does not fit in float16, which GPTQ stores: use --export "
                     "compressed-tensors (scales in the model dtype) or hdf5");
        scales.data<uint16_t>()[g * out + o] = h;
      }

    const std::vector<int32_t> gi = g_idx_or_default(q);
    Tensor g_idx = Tensor::zeros(DType::I32, {in});
    std::copy(gi.begin(), gi.end(), g_idx.data<int32_t>());

    out_.add(module + ".qweight", qweight);
    out_.add(module + ".qzeros", qzeros);
    out_.add(module + ".scales", scales);
    out_.add(module + ".g_idx", g_idx);
  }

  void finish(const ExportInfo& info) override {
    QS_ASSERT(!finished_, "finish called twice");
    QuantFormat base = info.format;
    if (base.family != FormatFamily::Int) {
      if (modules_.empty())
        fail_input("--export gptq: nothing was quantized and --format ", base.name(),
                   " is not an INT format");
      base = modules_.front().second;
    }
    nlohmann::json qc;
    qc["quant_method"] = "gptq";
    qc["bits"] = base.bits;
    qc["group_size"] = base.group_size;
    // g_idx that is not c / group_size is only honoured by readers when desc_act is true.
    qc["desc_act"] = act_order_ || (info.act_order && !info.static_groups);
    qc["sym"] = base.symmetric;
    qc["checkpoint_format"] = v2_ ? "gptq_v2" : "gptq";
    qc["static_groups"] = info.static_groups;
    qc["true_sequential"] = info.true_sequential;
    qc["damp_percent"] = info.damp;
    qc["pack_dtype"] = "int32";
    bool lm_head = false;
    nlohmann::json dynamic = nlohmann::json::object();
    for (const auto& [module, format] : modules_) {
      if (module == "lm_head") lm_head = true;
      if (!same_int_layout(format, base))
        dynamic["+:^" + regex_escape(module) + "$"] = {
            {"bits", format.bits}, {"group_size", format.group_size}, {"sym", format.symmetric}};
    }
    for (const auto& module : info.ignored_modules)
      if (module != "lm_head") dynamic["-:^" + regex_escape(module) + "$"] = nlohmann::json::object();
    qc["lm_head"] = lm_head;
    if (!dynamic.empty()) qc["dynamic"] = dynamic;
    qc["meta"] = {{"quantizer", {qshard_producer()}},
                  {"method", info.method},
                  {"damp_percent", info.damp}};

    const std::function<void()> commit = out_.close();
    finished_ = true;
    if (!out_.finishes_directory()) return;
    finish_output(out_dir_, info, commit, qc, {{"quantize_config.json", qc.dump(2) + "\n"}});
  }

 private:
  std::string out_dir_;
  ShardedOutput out_;
  std::vector<std::pair<std::string, QuantFormat>> modules_;
  bool v2_ = false;
  bool act_order_ = false;
  bool finished_ = false;
};

}  // namespace

std::unique_ptr<Exporter> make_gptq_exporter(const std::string& out_dir, uint64_t max_shard_bytes,
                                             const WriteSplit* split) {
  return std::make_unique<GptqExporter>(out_dir, max_shard_bytes, split);
}

}  // namespace qshard::exporting
