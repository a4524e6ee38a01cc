// What exporters refuse, what a killed export leaves behind (nothing with a final name),
// and how open_checkpoint reports broken exports.
#include <gtest/gtest.h>

#include <filesystem>

#include "export/exporter.h"
#include "export_test_util.h"
#include "io/json_file.h"

namespace qshard::testing {
namespace {

namespace fs = std::filesystem;

const ExportKind kKinds[] = {ExportKind::Gptq, ExportKind::CompressedTensors, ExportKind::FakeQuant,
                             ExportKind::Hdf5};

bool is_final_name(const std::string& f) {
  return f == "config.json" || f == "quantize_config.json" || f == "model.h5" ||
         (f.starts_with("model") && (f.ends_with(".safetensors") || f.ends_with(".index.json")));
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

void add_some(Exporter& ex) {
  const auto dense = dense_tensors(3);
  for (const auto& [name, t] : dense) ex.add_dense(name, t);
  ex.add_quantized(std::string(kLayer) + "self_attn.q_proj",
                   make_module({"q", int_format(4, 32, true), 64, 64, false, false}, 1));
  ex.add_quantized(std::string(kLayer) + "self_attn.k_proj",
                   make_module({"k", int_format(4, 32, true), 32, 64, true, false}, 2));
}

TEST(ExportAtomicity, NothingFinalBeforeFinishAndNothingLeftWithout) {
  for (ExportKind kind : kKinds) {
    SCOPED_TRACE(export_kind_name(kind));
    ScratchDir tmp;
    const std::string out = tmp / "out";
    {
      auto ex = make_exporter(kind, out, 4000);  // small shards: several are closed already
      add_some(*ex);
      for (const auto& f : list_dir(out)) EXPECT_FALSE(is_final_name(f)) << f;
    }  // destroyed without finish()
    EXPECT_EQ(list_dir(out), std::vector<std::string>{}) << "temporaries left behind";
  }
}

TEST(ExportAtomicity, FinishRefusesABadSourceBeforeRenamingAnything) {
  for (ExportKind kind : kKinds) {
    SCOPED_TRACE(export_kind_name(kind));
    ScratchDir tmp;
    const std::string out = tmp / "out";
    fs::create_directories(tmp / "empty-src");
    auto ex = make_exporter(kind, out);
    add_some(*ex);
    ExportInfo info;
    info.source_model_dir = tmp / "empty-src";
    info.format = int_format(4, 32, true);
    const std::string msg = message_of([&] { ex->finish(info); });
    EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
    for (const auto& f : list_dir(out)) EXPECT_FALSE(is_final_name(f)) << f;
    ex.reset();
    EXPECT_EQ(list_dir(out), std::vector<std::string>{});
  }
}

TEST(ExportAtomicity, StaleConfigIsReplacedAndOutputIsNotTheSource) {
  ScratchDir tmp;
  const std::string src = tmp / "src", out = tmp / "out";
  make_source_dir(src);
  fs::create_directories(out);
  write_text(out + "/config.json", "{\"stale\": true}");
  {
    auto ex = make_exporter(ExportKind::Gptq, out);
    add_some(*ex);
    ExportInfo info;
    info.source_model_dir = src;
    info.format = int_format(4, 32, true);
    ex->finish(info);
  }
  EXPECT_FALSE(read_json_file(out + "/config.json").contains("stale"));

  auto ex = make_exporter(ExportKind::FakeQuant, src);  // into the source directory itself
  add_some(*ex);
  ExportInfo info;
  info.source_model_dir = src;
  info.format = int_format(4, 32, true);
  const std::string msg = message_of([&] { ex->finish(info); });
  EXPECT_NE(msg.find("source model directory"), std::string::npos) << msg;
  ex.reset();
  EXPECT_NO_THROW(TensorStore::open(src).get("model.norm.weight"));  // source untouched
}

TEST(ExportSupports, RefusesWhatTheContainerCannotHold) {
  auto refuse = [](ExportKind kind, const QuantFormat& f, const char* want) {
    const std::string msg = message_of([&] { check_export_supports(kind, f, false); });
    EXPECT_NE(msg.find("--export"), std::string::npos) << msg;
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
  };
  refuse(ExportKind::Gptq, other_format(FormatFamily::MXFP4, 4, 32), "hdf5");
  refuse(ExportKind::Gptq, other_format(FormatFamily::NVFP4, 4, 16), "fakequant");
  refuse(ExportKind::Gptq, other_format(FormatFamily::MXInt, 8, 32), "--format mxint8");
  refuse(ExportKind::Gptq, int_format(5, 128, true), "--format int4");
  refuse(ExportKind::Gptq, int_format(6, 128, false), "int6");
  refuse(ExportKind::CompressedTensors, int_format(3, 128, true), "--export gptq");
  refuse(ExportKind::CompressedTensors, int_format(7, 128, true), "int4");
  refuse(ExportKind::CompressedTensors, other_format(FormatFamily::NVFP4, 4, 16), "--format nvfp4");
  refuse(ExportKind::CompressedTensors, other_format(FormatFamily::MXFP4, 4, 32), "hdf5");

  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false})
      for (int64_t g : {-1, 32, 128})
        EXPECT_NO_THROW(check_export_supports(ExportKind::Gptq, int_format(bits, g, sym), true));
  for (int bits : {2, 4, 8})
    for (bool sym : {true, false})
      for (int64_t g : {-1, 64})
        EXPECT_NO_THROW(check_export_supports(ExportKind::CompressedTensors, int_format(bits, g, sym), true));
  for (ExportKind kind : {ExportKind::FakeQuant, ExportKind::Hdf5}) {
    for (int bits = 2; bits <= 8; ++bits)
      EXPECT_NO_THROW(check_export_supports(kind, int_format(bits, 128, false), true));
    for (int bits : {3, 4, 6, 8})
      EXPECT_NO_THROW(check_export_supports(kind, other_format(FormatFamily::MXInt, bits, 32), true));
    EXPECT_NO_THROW(check_export_supports(kind, other_format(FormatFamily::MXFP4, 4, 32), true));
    EXPECT_NO_THROW(check_export_supports(kind, other_format(FormatFamily::NVFP4, 4, 16), true));
  }
}

TEST(ExportSupports, KindNames) {
  for (ExportKind kind : kKinds) EXPECT_EQ(parse_export_kind(export_kind_name(kind)), kind);
  EXPECT_EQ(parse_export_kind(export_kind_name(ExportKind::Awq)), ExportKind::Awq);
  const std::string msg = message_of([] { parse_export_kind("exl2"); });
  EXPECT_NE(msg.find("--export 'exl2'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("compressed-tensors"), std::string::npos) << msg;
}

TEST(ExportSupports, ModuleLevelRefusalsNameTheModule) {
  ScratchDir tmp;
  {
    auto ex = make_exporter(ExportKind::Gptq, tmp / "a");
    // 3-bit GPTQ packs 32 input rows per 3 words: 48 columns do not fit.
    const std::string msg = message_of([&] {
      ex->add_quantized("layers.0.odd", make_module({"o", int_format(3, 16, true), 32, 48, false, false}, 1));
    });
    EXPECT_NE(msg.find("layers.0.odd"), std::string::npos) << msg;
    EXPECT_NE(msg.find("multiples of 32"), std::string::npos) << msg;
  }
  {
    auto ex = make_exporter(ExportKind::Gptq, tmp / "b");
    ex->add_quantized("first", make_module({"s", int_format(4, 32, true), 32, 64, false, false}, 1));
    // An asymmetric module with a zero point of 0 after a symmetric one (GPTQ v1).
    const std::string msg = message_of([&] {
      ex->add_quantized("second", make_module({"a", int_format(4, 32, false), 32, 64, false, false}, 2));
    });
    EXPECT_NE(msg.find("second"), std::string::npos) << msg;
    EXPECT_NE(msg.find("compressed-tensors"), std::string::npos) << msg;
  }
  {
    auto ex = make_exporter(ExportKind::CompressedTensors, tmp / "c");
    const std::string msg = message_of([&] {
      ex->add_quantized("mx", make_module({"m", other_format(FormatFamily::MXFP4, 4, 32), 32, 64, false, false}, 1));
    });
    EXPECT_NE(msg.find("module mx"), std::string::npos) << msg;
  }
}

// ------------------------------------------------------------ broken checkpoints

// A directory with a config whose quantization_config is `qc` and the given tensors.
void make_checkpoint(const std::string& dir, const nlohmann::json& qc,
                     const std::vector<std::pair<std::string, Tensor>>& tensors) {
  fs::create_directories(dir);
  nlohmann::json cfg = {{"model_type", "llama"}};
  if (!qc.is_null()) cfg["quantization_config"] = qc;
  write_text(dir + "/config.json", cfg.dump());
  SafetensorsWriter w(dir, "model");
  for (const auto& [n, t] : tensors) w.add(n, t);
  w.finish();
}

TEST(OpenCheckpoint, ReportsBrokenExports) {
  ScratchDir tmp;
  const nlohmann::json gptq = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 32}, {"sym", true}};

  make_checkpoint(tmp / "exl2", {{"quant_method", "exl2"}}, {{"x", Tensor::zeros(DType::F32, {1})}});
  std::string msg = message_of([&] { open_checkpoint(tmp / "exl2"); });
  EXPECT_NE(msg.find("'exl2'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;

  make_checkpoint(tmp / "noz", gptq, {{"m.qweight", Tensor::zeros(DType::I32, {8, 16})},
                                      {"m.scales", Tensor::zeros(DType::F16, {2, 16})}});
  auto src = open_checkpoint(tmp / "noz");
  EXPECT_TRUE(src->contains("m.weight"));
  msg = message_of([&] { src->get("m.weight"); });
  EXPECT_NE(msg.find("m.qzeros"), std::string::npos) << msg;
  EXPECT_NE(msg.find(tmp / "noz"), std::string::npos) << msg;

  make_checkpoint(tmp / "shape", gptq, {{"m.qweight", Tensor::zeros(DType::I32, {8, 16})},
                                        {"m.qzeros", Tensor::zeros(DType::I32, {2, 3})},
                                        {"m.scales", Tensor::zeros(DType::F16, {2, 16})}});
  msg = message_of([&] { open_checkpoint(tmp / "shape")->get("m.weight"); });
  EXPECT_NE(msg.find("m.qzeros"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 2]"), std::string::npos) << msg;

  Tensor gi = Tensor::zeros(DType::I32, {64});
  gi.data<int32_t>()[5] = 7;
  make_checkpoint(tmp / "gidx", gptq, {{"m.qweight", Tensor::zeros(DType::I32, {8, 16})},
                                       {"m.qzeros", Tensor::zeros(DType::I32, {2, 2})},
                                       {"m.scales", Tensor::zeros(DType::F16, {2, 16})},
                                       {"m.g_idx", gi}});
  msg = message_of([&] { open_checkpoint(tmp / "gidx")->get("m.weight"); });
  EXPECT_NE(msg.find("m.g_idx"), std::string::npos) << msg;

  const nlohmann::json ct = {
      {"quant_method", "compressed-tensors"},
      {"format", "pack-quantized"},
      {"config_groups",
       {{"group_0", {{"targets", {"Linear"}}, {"weights", {{"num_bits", 4}, {"symmetric", true}}}}}}}};
  Tensor shape = Tensor::zeros(DType::I64, {2});
  shape.data<int64_t>()[0] = 16;
  shape.data<int64_t>()[1] = 64;
  make_checkpoint(tmp / "ct", ct, {{"m.weight_packed", Tensor::zeros(DType::I32, {16, 4})},
                                   {"m.weight_scale", Tensor::zeros(DType::BF16, {16, 2})},
                                   {"m.weight_shape", shape}});
  msg = message_of([&] { open_checkpoint(tmp / "ct")->get("m.weight"); });
  EXPECT_NE(msg.find("m.weight_packed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[16, 8]"), std::string::npos) << msg;

  nlohmann::json ct_float = ct;
  ct_float["format"] = "nvfp4-pack-quantized";
  make_checkpoint(tmp / "ctf", ct_float, {{"x", Tensor::zeros(DType::F32, {1})}});
  msg = message_of([&] { open_checkpoint(tmp / "ctf"); });
  EXPECT_NE(msg.find("nvfp4-pack-quantized"), std::string::npos) << msg;

  fs::create_directories(tmp / "h5");
  write_text(tmp / "h5/config.json", R"({"quantization_config": {"quant_method": "qshard-hdf5"}})");
  write_text(tmp / "h5/model.h5", "not an HDF5 file");
  msg = message_of([&] { open_checkpoint(tmp / "h5"); });
  EXPECT_NE(msg.find("model.h5"), std::string::npos) << msg;

  // No quantization_config: a plain TensorStore.
  make_checkpoint(tmp / "plain", nullptr, {{"w", Tensor::zeros(DType::BF16, {2, 2})}});
  EXPECT_EQ(open_checkpoint(tmp / "plain")->get("w").dtype(), DType::BF16);
  msg = message_of([&] { open_checkpoint(tmp / "plain")->get("missing"); });
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

}  // namespace
}  // namespace qshard::testing
