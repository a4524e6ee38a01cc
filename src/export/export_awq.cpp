// AutoAWQ "GEMM" checkpoints (formats.md C, read against AutoAWQ awq/modules/linear/gemm.py
// WQLinear_GEMM.from_linear and vLLM's AWQ loader). Per quantized Linear:
//   qweight  I32 [in, out/8]        codes packed along out, 8 per word, interleaved
//   qzeros   I32 [in/g, out/8]      zero points, same packing (stored as is, no "minus one")
//   scales   F16 [in/g, out]
// Word j of a row holds output channels 8j..8j+7; nibble k (bits 4k..4k+3) holds channel
// 8j + kOrder[k], kOrder = {0, 2, 4, 6, 1, 3, 5, 7}. Decoding: w = scale · (q − zero),
// which is exactly our asymmetric INT4 grid, so the codes and zeros go in unchanged.
// config.json gets {"quant_method": "awq", "bits": 4, "group_size", "zero_point": true,
// "version": "gemm", "modules_to_not_convert"} (AutoAWQ writes no quantize_config.json).
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "export/export_common.h"
#include "export/shard_output.h"

namespace qshard::exporting {

namespace {

constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

// Rows of 4-bit fields (values [rows, cols], cols % 8 == 0) as AWQ words [rows, cols/8].
Tensor pack_awq(const std::vector<int32_t>& values, int64_t rows, int64_t cols) {
  Tensor t = Tensor::zeros(DType::I32, {rows, cols / 8});
  int32_t* w = t.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols / 8; ++j) {
      uint32_t word = 0;
      for (int k = 0; k < 8; ++k)
        word |= (uint32_t(values[size_t(r * cols + 8 * j + kOrder[k])]) & 0xFu) << (4 * k);
      w[r * (cols / 8) + j] = int32_t(word);
    }
  return t;
}

class AwqExporter final : public Exporter {
 public:
  AwqExporter(const std::string& out_dir, uint64_t max_shard_bytes, const WriteSplit* split)
      : out_dir_(out_dir), out_(out_dir, max_shard_bytes, split) {}

  void add_dense(const std::string& name, const Tensor& t) override {
    QS_ASSERT(!finished_, "add_dense after finish");
    out_.add(name, t);
  }

  void add_quantized(const std::string& module, const QuantizedLinear& q) override {
    QS_ASSERT(!finished_, "add_quantized after finish");
    try {
      check_export_supports(ExportKind::Awq, q.format, false);
    } catch (const InputError& e) {
      fail_input("module ", module, ": ", e.what());
    }
    validate_quantized(module, q);
    const int64_t in = q.in_features, out = q.out_features, ng = q.n_groups();
    if (group_size_ == 0) group_size_ = q.format.group_size;
    if (q.format.group_size != group_size_)
      fail_input("module ", module, ": group size ", q.format.group_size, " differs from the ",
                 group_size_, " of the modules before it; an AWQ checkpoint has one group_size: "
                 "use --export compressed-tensors or hdf5 for mixed group sizes");
    if (out % 8 != 0)
      fail_input("module ", module, ": ", out, " output features are not a multiple of 8, "
                 "which AWQ's packing needs: use --export compressed-tensors or hdf5");
    if (q.has_act_order_g_idx())
      fail_input("module ", module, ": act-order g_idx cannot be stored in AWQ (no g_idx): add "
                 "--static-groups or drop --act-order");

    if (!out_.mine(module + ".qweight")) {  // another rank writes this module
      ++modules_;
      return;
    }
    // Codes [out, in] -> [in, out]; zeros and scales [out, ng] -> [ng, out].
    std::vector<int32_t> codes_t(size_t(in * out));
    for (int64_t o = 0; o < out; ++o)
      for (int64_t c = 0; c < in; ++c) codes_t[size_t(c * out + o)] = q.codes[size_t(o * in + c)];
    const std::vector<int32_t> zeros = int_zero_points(q);
    std::vector<int32_t> zeros_t(size_t(ng * out));
    std::vector<float> scales_t(size_t(ng * out));
    for (int64_t o = 0; o < out; ++o)
      for (int64_t g = 0; g < ng; ++g) {
        zeros_t[size_t(g * out + o)] = zeros[size_t(o * ng + g)];
        const float s = q.scales[size_t(o * ng + g)];
        const float back = round_through(s, DType::F16);
        if (!std::isfinite(back) || !(back > 0.0f))
          fail_input("module ", module, ": scale ", s, " (row ", o, ", group ", g, ") does not "
                     "survive rounding to F16, the dtype AWQ stores scales in: use --export "
                     "compressed-tensors or hdf5");
        scales_t[size_t(g * out + o)] = s;
      }
    out_.add(module + ".qweight", pack_awq(codes_t, in, out));
    out_.add(module + ".qzeros", pack_awq(zeros_t, ng, out));
    out_.add(module + ".scales", f32_to_dtype(scales_t.data(), {ng, out}, DType::F16));
    ++modules_;
  }

  void finish(const ExportInfo& info) override {
    QS_ASSERT(!finished_, "finish called twice");
    // lm_head is never converted by AutoAWQ; list only the decoder Linears left dense.
    nlohmann::json skip = nlohmann::json::array();
    for (const auto& m : info.ignored_modules)
      if (m != "lm_head") skip.push_back(m);
    nlohmann::json qc;
    qc["quant_method"] = "awq";
    qc["bits"] = 4;
    qc["group_size"] = group_size_ > 0 ? group_size_ : info.format.group_size;
    qc["zero_point"] = true;
    qc["version"] = "gemm";
    qc["modules_to_not_convert"] = skip.empty() ? nlohmann::json(nullptr) : skip;
    const std::function<void()> commit = out_.close();
    finished_ = true;
    if (out_.finishes_directory()) finish_output(out_dir_, info, commit, qc);
  }

 private:
  std::string out_dir_;
  ShardedOutput out_;
  int64_t group_size_ = 0;
  int64_t modules_ = 0;
  bool finished_ = false;
};

}  // namespace

std::unique_ptr<Exporter> make_awq_exporter(const std::string& out_dir, uint64_t max_shard_bytes,
                                            const WriteSplit* split) {
  return std::make_unique<AwqExporter>(out_dir, max_shard_bytes, split);
}

}  // namespace qshard::exporting
