// The whole forward against logits from an independent PyTorch forward of the same
// weights (tools/make_golden.py writes tests/model/data/golden/CASE/).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/decoder.h"

using namespace qshard;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> golden_cases() {
  std::vector<std::string> out;
  const fs::path dir = fs::path(QSHARD_TEST_DATA) / "golden";
  if (fs::exists(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (fs::exists(e.path() / "golden.safetensors")) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

// A case either carries its own weights or names a model directory of the repo.
std::string model_dir_of(const fs::path& case_dir) {
  std::ifstream in(case_dir / "model_dir.txt");
  std::string rel;
  if (in >> rel) return (fs::path(QSHARD_SOURCE_DIR) / rel).string();
  return case_dir.string();
}

class Forward : public ::testing::TestWithParam<std::string> {};

TEST_P(Forward, MatchesPyTorchLogits) {
  const fs::path case_dir = fs::path(QSHARD_TEST_DATA) / "golden" / GetParam();
  const std::string model_dir = model_dir_of(case_dir);
  const SafetensorsFile golden = SafetensorsFile::open((case_dir / "golden.safetensors").string());
  const Tensor tokens = golden.get("tokens");
  const Tensor expected = golden.get("logits").to_f32();
  ASSERT_EQ(tokens.ndim(), 2);
  const int64_t B = tokens.dim(0), S = tokens.dim(1);

  const TensorStore store = TensorStore::open(model_dir);
  auto backend = make_cpu_backend();
  CausalLM lm(ModelSpec::load(model_dir), store, *backend);
  const int64_t V = lm.spec().vocab_size;
  ASSERT_EQ(expected.shape(), (Shape{B, S, V}));

  Tensor flat = Tensor::zeros(DType::I32, {B * S});
  std::copy_n(tokens.data<int32_t>(), B * S, flat.data<int32_t>());
  const Tensor hidden = lm.forward_hidden(flat, B, S);
  const Tensor logits = backend->download(lm.logits(hidden));

  // fp32 against fp32 with a different summation order: differences are rounding,
  // a few 1e-6 of the logit scale; a wrong RoPE or mask shows up as O(1e-1).
  double max_err = 0, sum_sq = 0;
  const float* got = logits.data<float>();
  const float* want = expected.data<float>();
  for (int64_t i = 0; i < B * S * V; ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "non-finite logit at " << i;
    max_err = std::max(max_err, double(std::fabs(got[i] - want[i])));
    sum_sq += double(want[i]) * want[i];
  }
  const double rms = std::sqrt(sum_sq / double(B * S * V));
  ASSERT_GT(rms, 1e-2) << "golden logits are degenerate";
  EXPECT_LT(max_err, 2e-4 * std::max(1.0, rms) + 1e-4)
      << GetParam() << ": max |logit diff| " << max_err << " (logit rms " << rms << ")";
}

INSTANTIATE_TEST_SUITE_P(Golden, Forward, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

// Serves a real checkpoint minus one tensor.
class WithoutTensor : public TensorSource {
 public:
  WithoutTensor(const TensorSource& inner, std::string missing) : inner_(inner), missing_(std::move(missing)) {}
  bool contains(const std::string& n) const override { return n != missing_ && inner_.contains(n); }
  Tensor get(const std::string& n) const override {
    if (n == missing_) fail_input("tensor ", n, " not found in the test checkpoint");
    return inner_.get(n);
  }
  std::vector<std::string> names() const override { return inner_.names(); }

 private:
  const TensorSource& inner_;
  std::string missing_;
};

}  // namespace

TEST(CausalLM, RefusesIncompleteOrMismatchedCheckpoints) {
  const TensorStore store = TensorStore::open(QSHARD_TEST_MODEL);
  auto backend = make_cpu_backend();
  const ModelSpec spec = ModelSpec::load(QSHARD_TEST_MODEL);
  EXPECT_NO_THROW(CausalLM(spec, store, *backend));
  EXPECT_THROW(CausalLM(spec, WithoutTensor(store, "model.layers.2.mlp.up_proj.weight"), *backend),
               InputError);
  ModelSpec wrong = spec;
  wrong.intermediate_size = 1024;
  try {
    CausalLM lm(wrong, store, *backend);
    FAIL() << "a config/weights mismatch was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << e.what();
  }
  WithoutTensor no_head(store, "lm_head.weight");
  EXPECT_THROW(CausalLM(spec, no_head, *backend), InputError);  // not tied: needs lm_head
  ModelSpec tied = spec;
  tied.tie_word_embeddings = true;
  EXPECT_NO_THROW(CausalLM(tied, no_head, *backend));
}
