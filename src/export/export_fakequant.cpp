// Fake-quant checkpoints: every quantized Linear written back as a dense "<module>.weight"
// holding the dequantized weights, in the checkpoint's float dtype (that of the first
// dense tensor, BF16 when none came first), and config.json copied unchanged. Any engine
// loads it; it computes with the quantized grid's values (rounded once to that dtype).
// A run with --act-format adds "qshard_activation_quant" to config.json (qshard eval
// applies it; engines ignore unknown config keys and run unquantized activations).
#include "core/error.h"
#include "export/export_common.h"

namespace qshard::exporting {

namespace {

class FakeQuantExporter final : public Exporter {
 public:
  FakeQuantExporter(const std::string& out_dir, uint64_t max_shard_bytes, ActFormat act)
      : out_dir_(out_dir), writer_(out_dir, "model", max_shard_bytes), act_(act) {}

  void add_dense(const std::string& name, const Tensor& t) override {
    QS_ASSERT(!finished_, "add_dense after finish");
    dense_.see(t);
    writer_.add(name, t);
  }

  void add_quantized(const std::string& module, const QuantizedLinear& q) override {
    QS_ASSERT(!finished_, "add_quantized after finish");
    validate_quantized(module, q);
    const Tensor w = q.dequantize();
    writer_.add(module + ".weight", f32_to_dtype(w.data<float>(), w.shape(), dense_.get()));
  }

  void finish(const ExportInfo& info) override {
    QS_ASSERT(!finished_, "finish called twice");
    nlohmann::json extra = nullptr;
    if (act_ != ActFormat::None)
      extra = {{kActQuantKey, {{"format", act_format_name(act_)}, {"ignore", info.ignored_modules}}}};
    finish_output(out_dir_, info, [this] { writer_.finish(); }, nullptr, {}, extra);
    finished_ = true;
  }

 private:
  std::string out_dir_;
  SafetensorsWriter writer_;
  DenseDType dense_;
  ActFormat act_ = ActFormat::None;
  bool finished_ = false;
};

}  // namespace

std::unique_ptr<Exporter> make_fakequant_exporter(const std::string& out_dir, uint64_t max_shard_bytes,
                                                  ActFormat act) {
  return std::make_unique<FakeQuantExporter>(out_dir, max_shard_bytes, act);
}

}  // namespace qshard::exporting
