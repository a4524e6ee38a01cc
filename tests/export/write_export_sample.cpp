// Writes every export kind of seeded QuantizedLinears for check_exports_python.py:
//   OUT/source/                the fake source model (config, tokenizer files, weights)
//   OUT/<export>/              gptq-sym (sharded), gptq-asym, ct-sym, ct-asym,
//                              fakequant-sym, hdf5-sym, hdf5-asym, hdf5-mixed,
//                              ct-w8a8, ct-w4a8 (int-quantized, int8 activations),
//                              fakequant-w8a8 (activation scheme in config.json),
//                              hdf5-w4a8 (act_format mxint8), awq
//   OUT/reference.safetensors  "<export>/<module>.weight": F32 QuantizedLinear::dequantize
//                              with scales rounded as the container stores them (F16 for
//                              GPTQ, BF16 for compressed-tensors, none for HDF5 and
//                              fake-quant, whose BF16 rounding the checker applies)
// Usage: export_sample OUT
#include <cstdio>
#include <exception>

#include "export_test_util.h"

using namespace qshard;
using namespace qshard::testing;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    const std::string root = argv[1];
    std::filesystem::create_directories(root);
    const std::string src = root + "/source";
    make_source_dir(src);
    struct Export {
      const char* name;
      ExportKind kind;
      Set set;
      uint64_t shard_bytes;
      DType scale_dtype;
      ActFormat act = ActFormat::None;
    };
    const Export exports[] = {
        {"gptq-sym", ExportKind::Gptq, Set::Sym, 6000, DType::F16},
        {"gptq-asym", ExportKind::Gptq, Set::Asym, 5ull << 30, DType::F16},
        {"ct-sym", ExportKind::CompressedTensors, Set::SymCT, 5ull << 30, DType::BF16},
        {"ct-asym", ExportKind::CompressedTensors, Set::Asym, 6000, DType::BF16},
        {"fakequant-sym", ExportKind::FakeQuant, Set::Sym, 5ull << 30, DType::F32},
        {"fakequant-asym", ExportKind::FakeQuant, Set::Asym, 5ull << 30, DType::F32},
        {"hdf5-sym", ExportKind::Hdf5, Set::Sym, 5ull << 30, DType::F32},
        {"hdf5-asym", ExportKind::Hdf5, Set::Asym, 5ull << 30, DType::F32},
        {"hdf5-mixed", ExportKind::Hdf5, Set::Mixed, 5ull << 30, DType::F32},
        {"ct-w8a8", ExportKind::CompressedTensors, Set::W8A8, 6000, DType::BF16, ActFormat::Int8},
        {"ct-w4a8", ExportKind::CompressedTensors, Set::W4A8, 5ull << 30, DType::BF16, ActFormat::Int8},
        {"fakequant-w8a8", ExportKind::FakeQuant, Set::W8A8, 5ull << 30, DType::F32, ActFormat::Int8},
        {"hdf5-w4a8", ExportKind::Hdf5, Set::W4A8, 5ull << 30, DType::F32, ActFormat::MXInt8},
        {"awq", ExportKind::Awq, Set::Awq, 6000, DType::F16},
    };
    SafetensorsWriter ref(root, "reference");
    for (const Export& e : exports) {
      const auto mods = write_export(e.kind, e.set, e.shard_bytes, src, root + "/" + e.name, e.act);
      for (const auto& [name, q] : mods)
        ref.add(std::string(e.name) + "/" + name + ".weight", reference_weights(q, e.scale_dtype));
    }
    ref.finish();
    std::printf("wrote %s\n", root.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "export_sample: %s\n", e.what());
    return 1;
  }
}
