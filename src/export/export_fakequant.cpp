// Fake-quant checkpoints: every quantized Linear written back as a dense "<module>.weight"
// holding the dequantized weights, in the checkpoint's float dtype (that of the first
// dense tensor, BF16 when none came first), and config.json copied unchanged. Any engine
// loads it; it computes with the quantized grid's values (rounded once to that dtype).
// A run with --act-format adds "qshard_activation_quant" to config.json (qshard eval
// applies it; engines ignore unknown config keys and run unquantized activations).
#include "core/error.h"
#include "export/export_common.h"
#include "export/shard_output.h"

namespace qshard::exporting {

namespace {

class FakeQuantExporter final : public Exporter {
 public:
  FakeQuantExporter(const std::string& out_dir, uint64_t max_shard_bytes, ActFormat act,
                    const WriteSplit* split)
      : out_dir_(out_dir), out_(out_dir, max_shard_bytes, split), act_(act) {}

  void add_dense(const std::string& name, const Tensor& t) override {
    QS_ASSERT(!finished_, "add_dense after finish");
    dense_.see(t);
    out_.add(name, t);
  }

  void add_quantized(const std::string& module, const QuantizedLinear& q) override {
    QS_ASSERT(!finished_, "add_quantized after finish");
    if (!out_.mine(module + ".weight")) return;  // another rank writes this module
    validate_quantized(module, q);
    const Tensor w = q.dequantize();
    out_.add(module + ".weight", f32_to_dtype(w.data<float>(), w.shape(), dense_.get()));
  }

  void finish(const ExportInfo& info) override {
    QS_ASSERT(!finished_, "finish called twice");
    const std::function<void()> commit = out_.close();
    nlohmann::json extra = nullptr;
    if (act_ != ActFormat::None)
      extra = {{kActQuantKey, {{"format", act_format_name(act_)}, {"ignore", info.ignored_modules}}}};
    finished_ = true;
    if (out_.finishes_directory()) finish_output(out_dir_, info, commit, nullptr, {}, extra);
  }

 private:
  std::string out_dir_;
  ShardedOutput out_;
  DenseDType dense_;
  ActFormat act_ = ActFormat::None;
  bool finished_ = false;
};

}  // namespace

std::unique_ptr<Exporter> make_fakequant_exporter(const std::string& out_dir, uint64_t max_shard_bytes,
                                                  ActFormat act, const WriteSplit* split) {
  return std::make_unique<FakeQuantExporter>(out_dir, max_shard_bytes, act, split);
}

}  // namespace qshard::exporting
