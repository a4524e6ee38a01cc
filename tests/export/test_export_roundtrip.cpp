// Every export kind written from hand-made QuantizedLinears and read back through
// open_checkpoint, whose readers are written from formats.md independently of the
// writers: the weights must equal QuantizedLinear::dequantize exactly once the scales are
// rounded the way the container stores them (GPTQ F16, compressed-tensors the model dtype,
// HDF5 F32), and fake-quant must equal it rounded once to the model dtype.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "export/exporter.h"
#include "export_test_util.h"
#include "io/json_file.h"

namespace qshard::testing {
namespace {

namespace fs = std::filesystem;

struct Case {
  ExportKind kind;
  Set set;
  uint64_t shard_bytes;
  const char* label;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.label; }

void expect_same_floats(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.dtype(), DType::F32) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want.numel(); ++i)
    if (std::memcmp(got.data<float>() + i, want.data<float>() + i, 4) != 0) {
      if (first < 0) first = i;
      ++bad;
    }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.numel() << " differ, first at " << first
                    << " got " << (first >= 0 ? got.data<float>()[first] : 0.0f) << " want "
                    << (first >= 0 ? want.data<float>()[first] : 0.0f);
}

class ExportRoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(ExportRoundTrip, ReadsBackWhatWasWritten) {
  const Case c = GetParam();
  ScratchDir tmp;
  const std::string src = tmp / "src", out = tmp / "out";
  make_source_dir(src);
  const auto mods = write_export(c.kind, c.set, c.shard_bytes, src, out);

  // Files: tokenizer & co copied byte for byte; no directories, no temporaries, no
  // weights or stale quantization metadata of the source.
  for (const auto& f : copied_files()) EXPECT_EQ(read_text(out + "/" + f), read_text(src + "/" + f)) << f;
  for (const auto& f : list_dir(out)) {
    EXPECT_FALSE(f.starts_with(".")) << "leftover temporary " << f;
    EXPECT_FALSE(fs::is_directory(out + "/" + f)) << f;
  }
  const bool safetensors = c.kind != ExportKind::Hdf5;
  EXPECT_EQ(fs::exists(out + "/model.h5"), !safetensors);
  if (c.shard_bytes < 100000) {
    EXPECT_TRUE(fs::exists(out + "/model.safetensors.index.json"));
    EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  } else if (safetensors) {
    EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  }

  // config.json: the source's, plus quantization_config except for fake-quant.
  const auto cfg = read_json_file(out + "/config.json");
  const auto src_cfg = read_json_file(src + "/config.json");
  EXPECT_EQ(cfg["hidden_size"], src_cfg["hidden_size"]);
  EXPECT_EQ(fs::exists(out + "/quantize_config.json"), c.kind == ExportKind::Gptq);
  switch (c.kind) {
    case ExportKind::FakeQuant:
      EXPECT_EQ(read_text(out + "/config.json"), read_text(src + "/config.json"));
      break;
    case ExportKind::Gptq: {
      const auto& qc = cfg["quantization_config"];
      EXPECT_EQ(qc, read_json_file(out + "/quantize_config.json"));
      EXPECT_EQ(qc["quant_method"], "gptq");
      EXPECT_EQ(qc["bits"], 4);
      EXPECT_EQ(qc["group_size"], 32);
      EXPECT_EQ(qc["desc_act"], true);
      EXPECT_EQ(qc["lm_head"], false);
      const bool sym = c.set == Set::Sym;
      EXPECT_EQ(qc["sym"], sym);
      EXPECT_EQ(qc["checkpoint_format"], sym ? "gptq" : "gptq_v2");
      const auto& dyn = qc["dynamic"];
      const std::string v = "+:^model\\.layers\\.0\\.self_attn\\.v_proj$";
      ASSERT_TRUE(dyn.contains(v)) << dyn.dump();
      EXPECT_EQ(dyn[v]["bits"], 8);
      EXPECT_EQ(dyn[v]["group_size"], -1);
      EXPECT_FALSE(dyn.contains("+:^model\\.layers\\.0\\.self_attn\\.q_proj$"));
      break;
    }
    case ExportKind::CompressedTensors: {
      const auto& qc = cfg["quantization_config"];
      EXPECT_EQ(qc["quant_method"], "compressed-tensors");
      EXPECT_EQ(qc["format"], "pack-quantized");
      EXPECT_EQ(qc["ignore"], nlohmann::json({"lm_head"}));
      const auto& g0 = qc["config_groups"]["group_0"];
      EXPECT_EQ(g0["targets"], nlohmann::json({"Linear"}));
      EXPECT_EQ(g0["weights"]["num_bits"], 4);
      EXPECT_EQ(g0["weights"]["group_size"], 32);
      EXPECT_EQ(g0["weights"]["strategy"], "group");
      EXPECT_EQ(g0["weights"]["symmetric"], c.set != Set::Asym);
      EXPECT_EQ(g0["weights"]["actorder"], "group");  // some int4 g32 module is act-order
      bool saw_channel = false;
      for (const auto& [name, g] : qc["config_groups"].items())
        if (g["weights"]["strategy"] == "channel") {
          saw_channel = true;
          EXPECT_EQ(g["weights"]["num_bits"], 8);
          EXPECT_TRUE(g["weights"]["group_size"].is_null());
          EXPECT_EQ(g["targets"], nlohmann::json({std::string(kLayer) + "self_attn.v_proj"}));
        }
      EXPECT_TRUE(saw_channel);
      break;
    }
    case ExportKind::Hdf5: {
      const auto& qc = cfg["quantization_config"];
      EXPECT_EQ(qc["quant_method"], "qshard-hdf5");
      EXPECT_EQ(qc["file"], "model.h5");
      break;
    }
    case ExportKind::Awq: break;  // test_export_act_awq.cpp
  }

  // The dense view: every dense tensor as stored, every module as "<module>.weight".
  const auto reader = open_checkpoint(out);
  std::set<std::string> want_names;
  for (const auto& [name, t] : dense_tensors(7)) want_names.insert(name);
  for (const auto& [name, q] : mods) want_names.insert(name + ".weight");
  const auto names = reader->names();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), want_names);
  EXPECT_EQ(names.size(), want_names.size());
  for (const auto& [name, t] : dense_tensors(7)) {
    ASSERT_TRUE(reader->contains(name)) << name;
    const Tensor got = reader->get(name);
    EXPECT_EQ(got.dtype(), t.dtype()) << name;
    ASSERT_EQ(got.shape(), t.shape()) << name;
    EXPECT_EQ(std::memcmp(got.raw(), t.raw(), t.nbytes()), 0) << name;
  }
  for (const auto& [name, q] : mods) {
    const std::string w = name + ".weight";
    ASSERT_TRUE(reader->contains(w)) << w;
    const Tensor got = reader->get(w);
    switch (c.kind) {
      case ExportKind::Gptq: expect_same_floats(got, reference_weights(q, DType::F16), w); break;
      case ExportKind::CompressedTensors:
        expect_same_floats(got, reference_weights(q, DType::BF16), w);
        break;
      case ExportKind::Hdf5: expect_same_floats(got, reference_weights(q, DType::F32), w); break;
      case ExportKind::Awq: expect_same_floats(got, reference_weights(q, DType::F16), w); break;
      case ExportKind::FakeQuant: {
        const Tensor want = bf16_of(reference_weights(q, DType::F32));
        ASSERT_EQ(got.dtype(), DType::BF16) << w;
        ASSERT_EQ(got.shape(), want.shape()) << w;
        EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << w;
        break;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, ExportRoundTrip,
    ::testing::Values(Case{ExportKind::Gptq, Set::Sym, 5ull << 30, "gptq_sym"},
                      Case{ExportKind::Gptq, Set::Asym, 5ull << 30, "gptq_asym"},
                      Case{ExportKind::Gptq, Set::Sym, 6000, "gptq_sym_sharded"},
                      Case{ExportKind::CompressedTensors, Set::SymCT, 5ull << 30, "ct_sym"},
                      Case{ExportKind::CompressedTensors, Set::Asym, 5ull << 30, "ct_asym"},
                      Case{ExportKind::CompressedTensors, Set::Asym, 6000, "ct_asym_sharded"},
                      Case{ExportKind::FakeQuant, Set::Sym, 5ull << 30, "fakequant_sym"},
                      Case{ExportKind::FakeQuant, Set::Mixed, 6000, "fakequant_mixed_sharded"},
                      Case{ExportKind::Hdf5, Set::Sym, 5ull << 30, "hdf5_sym"},
                      Case{ExportKind::Hdf5, Set::Asym, 5ull << 30, "hdf5_asym"},
                      Case{ExportKind::Hdf5, Set::Mixed, 5ull << 30, "hdf5_mixed"},
                      Case{ExportKind::Awq, Set::Awq, 5ull << 30, "awq"},
                      Case{ExportKind::Awq, Set::Awq, 6000, "awq_sharded"}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.label); });

// Known packed words from formats.md worked examples, read back through open_checkpoint.
TEST(ExportLayout, GptqWorkedExampleBitOrder) {
  ScratchDir tmp;
  const std::string src = tmp / "src", out = tmp / "out";
  make_source_dir(src);
  QuantizedLinear q;
  q.format = int_format(4, -1, true);
  q.out_features = 8;
  q.in_features = 8;
  q.codes.assign(64, 0);
  for (int i = 0; i < 8; ++i) q.codes[size_t(0 * 8 + i)] = uint8_t(i + 1);  // output 0: 1..8
  q.scales.assign(8, 1.0f);
  {
    auto ex = make_exporter(ExportKind::Gptq, out);
    ex->add_quantized("m", q);
    ExportInfo info;
    info.source_model_dir = src;
    info.format = q.format;
    ex->finish(info);
  }
  const TensorStore st = TensorStore::open(out);
  const Tensor qw = st.get("m.qweight");
  ASSERT_EQ(qw.shape(), (Shape{1, 8}));
  EXPECT_EQ(uint32_t(qw.data<int32_t>()[0]), 0x87654321u);  // B.3
  const Tensor qz = st.get("m.qzeros");
  ASSERT_EQ(qz.shape(), (Shape{1, 1}));
  EXPECT_EQ(uint32_t(qz.data<int32_t>()[0]), 0x77777777u);  // B.4: v1, zero 8 stored as 7
  EXPECT_EQ(st.get("m.scales").dtype(), DType::F16);
}

TEST(ExportLayout, CompressedTensorsWorkedExample) {
  ScratchDir tmp;
  const std::string src = tmp / "src", out = tmp / "out";
  make_source_dir(src);
  QuantizedLinear q;
  q.format = int_format(4, -1, false);
  q.out_features = 8;
  q.in_features = 8;
  // signed −8, −7, −1, 0, 1, 2, 3, 7 (D.3) = unsigned 0 1 7 8 9 10 11 15
  const uint8_t row[8] = {0, 1, 7, 8, 9, 10, 11, 15};
  q.codes.assign(64, 8);
  std::copy(row, row + 8, q.codes.begin());
  q.scales.assign(8, 0.5f);
  q.zeros = {0, 1, 2, 3, 4, 5, 6, 15};
  {
    auto ex = make_exporter(ExportKind::CompressedTensors, out);
    ex->add_dense("model.embed_tokens.weight", Tensor::zeros(DType::F16, {2, 8}));
    ex->add_quantized("m", q);
    ExportInfo info;
    info.source_model_dir = src;
    info.format = q.format;
    ex->finish(info);
  }
  const TensorStore st = TensorStore::open(out);
  EXPECT_EQ(uint32_t(st.get("m.weight_packed").data<int32_t>()[0]), 0xFBA98710u);
  const Tensor zp = st.get("m.weight_zero_point");
  ASSERT_EQ(zp.shape(), (Shape{1, 1}));
  EXPECT_EQ(uint32_t(zp.data<int32_t>()[0]), 0xF6543210u);  // zeros of outputs 0..7, packed along out
  EXPECT_EQ(st.get("m.weight_scale").dtype(), DType::F16);   // the checkpoint's dtype
  EXPECT_EQ(st.get("m.weight_scale").shape(), (Shape{8, 1}));
  const Tensor shape = st.get("m.weight_shape");
  EXPECT_EQ(shape.dtype(), DType::I64);
  EXPECT_EQ(shape.data<int64_t>()[0], 8);
  EXPECT_FALSE(st.contains("m.weight_g_idx"));
}

// GPTQ 3-bit: 32 codes k mod 8 give the words of formats.md B.3.
TEST(ExportLayout, Gptq3BitStream) {
  ScratchDir tmp;
  const std::string src = tmp / "src", out = tmp / "out";
  make_source_dir(src);
  QuantizedLinear q;
  q.format = int_format(3, -1, true);
  q.out_features = 32;
  q.in_features = 32;
  q.codes.assign(32 * 32, 0);
  for (int k = 0; k < 32; ++k) q.codes[size_t(k)] = uint8_t(k % 8);
  q.scales.assign(32, 1.0f);
  {
    auto ex = make_exporter(ExportKind::Gptq, out);
    ex->add_quantized("m", q);
    ExportInfo info;
    info.source_model_dir = src;
    info.format = q.format;
    ex->finish(info);
  }
  const Tensor qw = TensorStore::open(out).get("m.qweight");
  ASSERT_EQ(qw.shape(), (Shape{3, 32}));
  EXPECT_EQ(uint32_t(qw.data<int32_t>()[0 * 32]), 0x88fac688u);
  EXPECT_EQ(uint32_t(qw.data<int32_t>()[1 * 32]), 0xc688fac6u);
  EXPECT_EQ(uint32_t(qw.data<int32_t>()[2 * 32]), 0xfac688fau);
}

}  // namespace
}  // namespace qshard::testing
