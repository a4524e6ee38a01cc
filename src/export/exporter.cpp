// Export kinds: names, what each container can hold, and the factory.
#include "export/exporter.h"

#include "core/error.h"
#include "export/export_common.h"
#include "export/gguf_arch.h"
#include "model/architecture.h"

namespace qshard {

ExportKind parse_export_kind(const std::string& name) {
  if (name == "gptq") return ExportKind::Gptq;
  if (name == "compressed-tensors") return ExportKind::CompressedTensors;
  if (name == "fakequant") return ExportKind::FakeQuant;
  if (name == "hdf5") return ExportKind::Hdf5;
  if (name == "awq") return ExportKind::Awq;
  if (name == "gguf") return ExportKind::Gguf;
  fail_input("--export '", name, "' is not supported: use gptq, compressed-tensors, awq, gguf, fakequant or hdf5");
}

const char* export_kind_name(ExportKind kind) {
  switch (kind) {
    case ExportKind::Gptq: return "gptq";
    case ExportKind::CompressedTensors: return "compressed-tensors";
    case ExportKind::FakeQuant: return "fakequant";
    case ExportKind::Hdf5: return "hdf5";
    case ExportKind::Awq: return "awq";
    case ExportKind::Gguf: return "gguf";
  }
  return "?";
}

void check_export_supports(ExportKind kind, const QuantFormat& format, bool act_order) {
  (void)act_order;  // every container here records act-order through g_idx
  const std::string what = format.describe();
  switch (kind) {
    case ExportKind::Gptq:
      if (format.family != FormatFamily::Int)
        fail_input("--export gptq stores INT formats only, not --format ", format.name(),
                   ": use --export hdf5 (every format, qshard's own layout) or --export "
                   "fakequant (dequantized dense weights any engine loads)");
      if (format.bits != 2 && format.bits != 3 && format.bits != 4 && format.bits != 8)
        fail_input("--export gptq: GPTQ kernels take 2, 3, 4 or 8 bits, not --format ",
                   format.name(), ": use --format int4 or int8, or --export hdf5 / fakequant");
      return;
    case ExportKind::CompressedTensors:
      if (format.family != FormatFamily::Int)
        fail_input("--export compressed-tensors writes pack-quantized INT weights only, not "
                   "--format ", format.name(), ": use --export hdf5 or --export fakequant");
      if (format.bits != 2 && format.bits != 4 && format.bits != 8)
        fail_input("--export compressed-tensors: ", what, " is not supported: 3/5/6/7-bit "
                   "codes pack differently across compressed-tensors versions and vLLM loads "
                   "only 4 and 8 bits; use --format int4 or int8, --export gptq for int3, or "
                   "--export hdf5 / fakequant");
      if (format.group_size != -1 && format.group_size <= 0)
        fail_input("--export compressed-tensors: group size ", format.group_size,
                   " is not valid (use a positive --group-size, or -1 for per-channel)");
      return;
    case ExportKind::Awq:
      // AutoAWQ's WQLinear_GEMM packs 4-bit codes with zero points (formats.md C); vLLM's
      // AWQ kernels need a positive group size and read no g_idx.
      if (format.family != FormatFamily::Int || format.bits != 4 || format.symmetric)
        fail_input("--export awq holds int4 with zero points only, not ", what,
                   ": use --format int4 --asym, or --export compressed-tensors / gptq / hdf5");
      if (format.group_size <= 0)
        fail_input("--export awq: group size ", format.group_size, " is not supported (vLLM's AWQ "
                   "kernels need a positive --group-size such as 128)");
      return;
    case ExportKind::Gguf:
      if (!format.is_ggml())
        fail_input("--export gguf holds llama.cpp's block types, not ", what,
                   ": use --format q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl or iq4_xs");
      return;
    case ExportKind::FakeQuant:
    case ExportKind::Hdf5:
      return;
  }
}

void check_export_supports_act(ExportKind kind, ActFormat act, const QuantFormat& format,
                               bool scattered_g_idx) {
  if (act == ActFormat::None) return;
  const std::string a = act_format_name(act);
  switch (kind) {
    case ExportKind::Gptq:
    case ExportKind::Awq:
    case ExportKind::Gguf:
      fail_input("--export ", export_kind_name(kind), " cannot record --act-format ", a,
                 " (the layout is weight-only): use --export compressed-tensors (int8 "
                 "activations), fakequant or hdf5");
    case ExportKind::CompressedTensors: {
      if (act != ActFormat::Int8)
        fail_input("--export compressed-tensors: --act-format ", a, " has no compressed-tensors "
                   "scheme an engine loads (int8 per token does): use --export fakequant or hdf5");
      const bool w8a8 = format.family == FormatFamily::Int && format.bits == 8 &&
                        format.symmetric && format.group_size == -1;
      const bool w4a8 = format.family == FormatFamily::Int && format.bits == 4 && format.symmetric;
      if (!w8a8 && !w4a8)
        fail_input("--export compressed-tensors with --act-format int8 holds W8A8 (--format int8 "
                   "--group-size -1 --sym) or W4A8 (--format int4 --sym), what vLLM's int8 "
                   "activation kernels load, not ", format.describe(),
                   ": change --format, or use --export fakequant / hdf5");
      if (scattered_g_idx)
        fail_input("--export compressed-tensors with --act-format int8: vLLM's W8A8/W4A8 kernels "
                   "read no g_idx; add --static-groups to --act-order, or drop --act-order");
      return;
    }
    case ExportKind::FakeQuant:
    case ExportKind::Hdf5:
      return;
  }
}

void check_export_supports_model(ExportKind kind, const ModelSpec& spec, const QuantFormat& format, bool mix) {
  if (kind != ExportKind::Gguf) return;
  exporting::gguf_arch(spec);
  if (spec.num_experts > 0 && (mix || format.ggml_block() == 256))
    fail_input("--export gguf of model_type ", spec.model_type, " (mixture of experts): llama.cpp's "
               "per-tensor types and K-quant fallbacks for expert layers are not planned yet; use a "
               "32-block --format (", kGgufExpertFormats, ")");
}

void check_gguf_expert_formats(ExportKind kind, const ModelSpec& spec,
                               const std::function<std::optional<QuantFormat>(const std::string&)>& format_for) {
  if (kind != ExportKind::Gguf || spec.num_experts == 0) return;
  struct First {
    std::string module, format;
  };
  std::map<std::string, First> stacks;  // stacked tensor -> its first expert and that one's format
  for (int64_t l = 0; l < spec.num_layers; ++l)
    for (const LinearSlot& linear : layer_linears(spec)) {
      const std::string module = spec.layer_prefix(l) + linear.name;
      const auto slot = exporting::gguf_expert_slot(module + ".weight");
      if (!slot) continue;
      const std::optional<QuantFormat> f = format_for(module);
      if (f && f->ggml_block() == 256)
        fail_input("--recipe: ", module, " gets ", f->describe(), ", but --export gguf of model_type ",
                   spec.model_type, " (mixture of experts) writes experts in 32-block types only (",
                   kGgufExpertFormats, "): give them one of those");
      const std::string name = f ? f->describe() : "not quantized";
      const auto [it, first] = stacks.try_emplace(slot->name, First{module, name});
      if (!first && it->second.format != name)
        fail_input("--export gguf: ", slot->name, " stacks every expert in one GGUF tensor of one type, but ",
                   it->second.module, " is ", it->second.format, " and ", module, " is ", name,
                   ": give the experts of a layer one format (--recipe, --skip)");
    }
}

std::unique_ptr<Exporter> make_exporter(ExportKind kind, const std::string& out_dir,
                                        uint64_t max_shard_bytes, const WriteSplit* split, ActFormat act) {
  if (out_dir.empty()) fail_input("--out: an output directory is required");
  if (act != ActFormat::None && (kind == ExportKind::Gptq || kind == ExportKind::Awq || kind == ExportKind::Gguf))
    check_export_supports_act(kind, act, QuantFormat{}, false);  // refuses
  switch (kind) {
    case ExportKind::Gptq: return exporting::make_gptq_exporter(out_dir, max_shard_bytes, split);
    case ExportKind::CompressedTensors:
      return exporting::make_compressed_tensors_exporter(out_dir, max_shard_bytes, act, split);
    case ExportKind::FakeQuant:
      return exporting::make_fakequant_exporter(out_dir, max_shard_bytes, act, split);
    case ExportKind::Hdf5: return exporting::make_hdf5_exporter(out_dir, act, split);
    case ExportKind::Awq: return exporting::make_awq_exporter(out_dir, max_shard_bytes, split);
    case ExportKind::Gguf: return exporting::make_gguf_exporter(out_dir, split);
  }
  QS_ASSERT(false, "unhandled export kind");
}

}  // namespace qshard
