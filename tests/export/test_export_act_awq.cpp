// The activation-quantized exports (compressed-tensors int-quantized W8A8 / W4A8, the
// activation scheme recorded by fake-quant and HDF5) and the AWQ GEMM export: read back
// through open_checkpoint and read_act_scheme, the AWQ worked example of formats.md C.3,
// and the combinations refused up front.
#include <gtest/gtest.h>

#include <cstring>

#include "export/exporter.h"
#include "export_test_util.h"
#include "io/json_file.h"

namespace qshard::testing {
namespace {

void expect_same_floats(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.dtype(), DType::F32) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << what;
}

struct ActCase {
  const char* label;
  ExportKind kind;
  Set set;
  ActFormat act;
};

class ActExport : public ::testing::TestWithParam<ActCase> {};

TEST_P(ActExport, RecordsTheSchemeAndReadsBack) {
  const ActCase c = GetParam();
  ScratchDir tmp;
  const std::string src = tmp / "src", out = tmp / "out";
  make_source_dir(src);
  const auto mods = write_export(c.kind, c.set, 5ull << 30, src, out, c.act);
  const ActScheme s = read_act_scheme(out);
  EXPECT_EQ(s.format, c.act);
  EXPECT_TRUE(s.unsupported.empty()) << s.unsupported;
  EXPECT_EQ(s.format_for("lm_head"), ActFormat::None);
  EXPECT_EQ(s.format_for(std::string(kLayer) + "mlp.down_proj"), c.act);

  const auto reader = open_checkpoint(out);
  const DType scale_dtype = c.kind == ExportKind::CompressedTensors ? DType::BF16 : DType::F32;
  for (const auto& [name, q] : mods) {
    const Tensor got = reader->get(name + ".weight");
    if (c.kind == ExportKind::FakeQuant) {
      const Tensor want = bf16_of(reference_weights(q, DType::F32));
      EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << name;
    } else {
      expect_same_floats(got, reference_weights(q, scale_dtype), name);
    }
  }
  const auto names = reader->names();
  for (const auto& n : names) {
    EXPECT_FALSE(n.ends_with(".weight_scale")) << n << " should be hidden behind .weight";
    EXPECT_FALSE(n.ends_with(".weight_zero_point")) << n;
  }

  const auto cfg = read_json_file(out + "/config.json");
  if (c.kind == ExportKind::CompressedTensors) {
    const auto& qc = cfg["quantization_config"];
    EXPECT_EQ(qc["format"], "int-quantized");
    const auto& g0 = qc["config_groups"]["group_0"];
    EXPECT_EQ(g0["input_activations"]["strategy"], "token");
    EXPECT_EQ(g0["input_activations"]["dynamic"], true);
    EXPECT_EQ(g0["input_activations"]["num_bits"], 8);
    EXPECT_TRUE(g0["input_activations"]["observer"].is_null());
    const TensorStore st = TensorStore::open(out);
    const std::string q = std::string(kLayer) + "self_attn.q_proj";
    EXPECT_EQ(st.get(q + ".weight").dtype(), DType::I8);
    EXPECT_FALSE(st.contains(q + ".weight_shape"));
    EXPECT_FALSE(st.contains(q + ".weight_packed"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, ActExport,
    ::testing::Values(ActCase{"ct_w8a8", ExportKind::CompressedTensors, Set::W8A8, ActFormat::Int8},
                      ActCase{"ct_w4a8", ExportKind::CompressedTensors, Set::W4A8, ActFormat::Int8},
                      ActCase{"fakequant_int8", ExportKind::FakeQuant, Set::W8A8, ActFormat::Int8},
                      ActCase{"hdf5_mxint8", ExportKind::Hdf5, Set::W4A8, ActFormat::MXInt8}),
    [](const ::testing::TestParamInfo<ActCase>& i) { return std::string(i.param.label); });

TEST(ActExport, PlainModelRecordsNone) {
  ScratchDir tmp;
  make_source_dir(tmp / "src");
  const ActScheme s = read_act_scheme(tmp / "src");
  EXPECT_EQ(s.format, ActFormat::None);
  EXPECT_EQ(s.ignore, std::vector<std::string>{"lm_head"});
}

TEST(ActExport, ReadsRegexIgnoreAndRefusesOtherActivationSchemes) {
  ScratchDir tmp;
  const std::string d = tmp / "m";
  std::filesystem::create_directories(d);
  nlohmann::json qc = {{"quant_method", "compressed-tensors"},
                       {"format", "int-quantized"},
                       {"ignore", {"lm_head", "re:.*layers\\.1\\..*"}},
                       {"config_groups",
                        {{"group_0",
                          {{"targets", {"Linear"}},
                           {"weights", {{"num_bits", 8}, {"type", "int"}}},
                           {"input_activations",
                            {{"num_bits", 8}, {"type", "int"}, {"symmetric", true},
                             {"strategy", "token"}, {"dynamic", true}}}}}}}};
  write_text(d + "/config.json", nlohmann::json({{"quantization_config", qc}}).dump());
  ActScheme s = read_act_scheme(d);
  EXPECT_EQ(s.format, ActFormat::Int8);
  EXPECT_EQ(s.format_for("model.layers.0.mlp.up_proj"), ActFormat::Int8);
  EXPECT_EQ(s.format_for("model.layers.1.mlp.up_proj"), ActFormat::None);
  // Static per-tensor activations are not simulated: reported, format None.
  qc["config_groups"]["group_0"]["input_activations"]["strategy"] = "tensor";
  qc["config_groups"]["group_0"]["input_activations"]["dynamic"] = false;
  write_text(d + "/config.json", nlohmann::json({{"quantization_config", qc}}).dump());
  s = read_act_scheme(d);
  EXPECT_EQ(s.format, ActFormat::None);
  EXPECT_NE(s.unsupported.find("int8 symmetric dynamic per-token"), std::string::npos) << s.unsupported;
}

// formats.md C.3: codes of output channels 0..7 = 1..8 give 0x86427531.
TEST(AwqLayout, WorkedExampleInterleave) {
  ScratchDir tmp;
  const std::string src = tmp / "src", out = tmp / "out";
  make_source_dir(src);
  QuantizedLinear q;
  q.format = int_format(4, 8, false);
  q.out_features = 8;
  q.in_features = 16;
  q.codes.assign(8 * 16, 0);
  for (int o = 0; o < 8; ++o) q.codes[size_t(o * 16 + 0)] = uint8_t(o + 1);  // input row 0
  q.scales.assign(8 * 2, 0.25f);
  q.zeros.assign(8 * 2, 0.0f);
  for (int o = 0; o < 8; ++o) q.zeros[size_t(o * 2 + 1)] = float(o + 8);  // group 1: 8..15
  {
    auto ex = make_exporter(ExportKind::Awq, out);
    ex->add_quantized("m", q);
    ExportInfo info;
    info.source_model_dir = src;
    info.format = q.format;
    info.ignored_modules = {"lm_head", "model.layers.0.mlp.down_proj"};
    ex->finish(info);
  }
  const TensorStore st = TensorStore::open(out);
  const Tensor qw = st.get("m.qweight");
  ASSERT_EQ(qw.shape(), (Shape{16, 1}));
  EXPECT_EQ(uint32_t(qw.data<int32_t>()[0]), 0x86427531u);
  const Tensor qz = st.get("m.qzeros");
  ASSERT_EQ(qz.shape(), (Shape{2, 1}));
  EXPECT_EQ(uint32_t(qz.data<int32_t>()[0]), 0u);
  EXPECT_EQ(uint32_t(qz.data<int32_t>()[1]), 0xFDB9ECA8u);  // 8..15 interleaved
  EXPECT_EQ(st.get("m.scales").dtype(), DType::F16);
  EXPECT_EQ(st.get("m.scales").shape(), (Shape{2, 8}));
  const auto qc = read_json_file(out + "/config.json")["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "awq");
  EXPECT_EQ(qc["version"], "gemm");
  EXPECT_EQ(qc["bits"], 4);
  EXPECT_EQ(qc["group_size"], 8);
  EXPECT_EQ(qc["zero_point"], true);
  EXPECT_EQ(qc["modules_to_not_convert"], nlohmann::json({"model.layers.0.mlp.down_proj"}));
  EXPECT_FALSE(std::filesystem::exists(out + "/quantize_config.json"));
}

TEST(ExportRefusals, AwqAndActivationCombinations) {
  auto refused = [](auto&& f) {
    try {
      f();
    } catch (const InputError&) {
      return true;
    }
    return false;
  };
  EXPECT_TRUE(refused([] { check_export_supports(ExportKind::Awq, int_format(4, 128, true), false); }));
  EXPECT_TRUE(refused([] { check_export_supports(ExportKind::Awq, int_format(8, 128, false), false); }));
  EXPECT_TRUE(refused([] { check_export_supports(ExportKind::Awq, int_format(4, -1, false), false); }));
  EXPECT_FALSE(refused([] { check_export_supports(ExportKind::Awq, int_format(4, 128, false), false); }));
  EXPECT_EQ(parse_export_kind("awq"), ExportKind::Awq);

  const auto a8 = ActFormat::Int8;
  EXPECT_FALSE(refused([&] { check_export_supports_act(ExportKind::CompressedTensors, a8, int_format(8, -1, true), false); }));
  EXPECT_FALSE(refused([&] { check_export_supports_act(ExportKind::CompressedTensors, a8, int_format(4, 128, true), false); }));
  EXPECT_TRUE(refused([&] { check_export_supports_act(ExportKind::CompressedTensors, a8, int_format(8, 128, true), false); }));
  EXPECT_TRUE(refused([&] { check_export_supports_act(ExportKind::CompressedTensors, a8, int_format(4, 128, false), false); }));
  EXPECT_TRUE(refused([&] { check_export_supports_act(ExportKind::CompressedTensors, a8, int_format(4, 128, true), true); }));
  EXPECT_TRUE(refused([&] { check_export_supports_act(ExportKind::CompressedTensors, ActFormat::MXInt8, int_format(8, -1, true), false); }));
  EXPECT_TRUE(refused([&] { check_export_supports_act(ExportKind::Gptq, a8, int_format(4, 128, true), false); }));
  EXPECT_TRUE(refused([&] { check_export_supports_act(ExportKind::Awq, a8, int_format(4, 128, false), false); }));
  EXPECT_FALSE(refused([&] { check_export_supports_act(ExportKind::FakeQuant, ActFormat::MXInt8, int_format(3, 64, false), false); }));
  EXPECT_FALSE(refused([&] { check_export_supports_act(ExportKind::Hdf5, ActFormat::MXInt8, int_format(3, 64, false), true); }));

  // Per module: act-order g_idx and mixed group sizes have no place in AWQ.
  ScratchDir tmp;
  ModuleSpec spec{"m", int_format(4, 16, false), 32, 64, true, false};
  auto ex = make_exporter(ExportKind::Awq, tmp / "awq");
  EXPECT_TRUE(refused([&] { ex->add_quantized("m", make_module(spec, 1)); }));
  spec.act_order = false;
  ex->add_quantized("m", make_module(spec, 1));
  spec.format = int_format(4, 32, false);
  EXPECT_TRUE(refused([&] { ex->add_quantized("m2", make_module(spec, 2)); }));
}

}  // namespace
}  // namespace qshard::testing
