// Export kinds: names, what each container can hold, and the factory.
#include "export/exporter.h"

#include "core/error.h"
#include "export/export_common.h"

namespace qshard {

ExportKind parse_export_kind(const std::string& name) {
  if (name == "gptq") return ExportKind::Gptq;
  if (name == "compressed-tensors") return ExportKind::CompressedTensors;
  if (name == "fakequant") return ExportKind::FakeQuant;
  if (name == "hdf5") return ExportKind::Hdf5;
  fail_input("--export '", name, "' is not supported: use gptq, compressed-tensors, fakequant or hdf5");
}

const char* export_kind_name(ExportKind kind) {
  switch (kind) {
    case ExportKind::Gptq: return "gptq";
    case ExportKind::CompressedTensors: return "compressed-tensors";
    case ExportKind::FakeQuant: return "fakequant";
    case ExportKind::Hdf5: return "hdf5";
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
    case ExportKind::FakeQuant:
    case ExportKind::Hdf5:
      return;
  }
}

std::unique_ptr<Exporter> make_exporter(ExportKind kind, const std::string& out_dir,
                                        uint64_t max_shard_bytes, const WriteSplit* split) {
  if (out_dir.empty()) fail_input("--out: an output directory is required");
  switch (kind) {
    case ExportKind::Gptq: return exporting::make_gptq_exporter(out_dir, max_shard_bytes, split);
    case ExportKind::CompressedTensors:
      return exporting::make_compressed_tensors_exporter(out_dir, max_shard_bytes, split);
    case ExportKind::FakeQuant:
      return exporting::make_fakequant_exporter(out_dir, max_shard_bytes, split);
    case ExportKind::Hdf5: return exporting::make_hdf5_exporter(out_dir, split);
  }
  QS_ASSERT(false, "unhandled export kind");
}

}  // namespace qshard
