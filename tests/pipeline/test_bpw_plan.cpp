#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "model/model_spec.h"
#include "pipeline/bpw_plan.h"

using namespace qshard;

namespace {

ModelSpec tiny_spec() { return ModelSpec::load(QSHARD_TEST_MODEL); }

// Every module's error for each candidate: falling with bits, scaled per module so that
// modules differ in how much an extra bit buys.
void fill_errors(BpwPlan& plan) {
  for (size_t i = 0; i < plan.modules.size(); ++i) {
    PlannedModule& m = plan.modules[i];
    m.errors.clear();
    for (double b : m.bits) m.errors.push_back(double((i * 7919) % 13 + 1) * std::exp2(-2 * b));
  }
}

}  // namespace

TEST(BpwPlan, BitsCountScalesAndZeros) {
  EXPECT_DOUBLE_EQ(bits_per_weight(QuantFormat::parse("int4", 64, false), 256), 4 + 20.0 / 64);
  EXPECT_DOUBLE_EQ(bits_per_weight(QuantFormat::parse("int4", 64, true), 256), 4 + 16.0 / 64);
  EXPECT_DOUBLE_EQ(bits_per_weight(QuantFormat::parse("int8", -1, true), 256), 8 + 16.0 / 256);
  EXPECT_DOUBLE_EQ(bits_per_weight(QuantFormat::parse("mxfp4", 0, true), 256), 4.25);
  EXPECT_DOUBLE_EQ(bits_per_weight(QuantFormat::parse("q4_k", 0, true), 256), 4.5);
  EXPECT_DOUBLE_EQ(bits_per_weight(QuantFormat::parse("q8_0", 0, true), 256), 8.5);
}

TEST(BpwPlan, ParsesTheFormatList) {
  const auto f = parse_bpw_formats("int3:g64,int4:g32:asym,int8:g-1:sym,int4", true);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0].describe(), "int3 g64 sym");
  EXPECT_EQ(f[1].describe(), "int4 g32 asym");
  EXPECT_EQ(f[2].group_size, -1);
  EXPECT_EQ(f[3].group_size, 128);
  EXPECT_THROW(parse_bpw_formats("int4:x64", true), InputError);
  EXPECT_THROW(parse_bpw_formats("int9:g64", true), InputError);
  EXPECT_THROW(parse_bpw_formats("", true), InputError);
}

TEST(BpwPlan, MeetsEveryBudgetAndErrorFallsWithIt) {
  const ModelSpec spec = tiny_spec();
  const Recipe recipe(QuantFormat::parse("int4", 128, false));
  const auto formats = default_bpw_formats(false);
  double last_error = 1e300;
  for (double target : {3.2969, 3.5, 3.8, 4.0, 4.3125, 4.5, 5.0, 6.0, 8.1875, 9.0}) {
    BpwPlan plan = plan_modules(spec, recipe, formats, target);
    ASSERT_EQ(plan.modules.size(), size_t(7 * spec.num_layers));
    fill_errors(plan);
    choose_formats(plan);
    EXPECT_LE(plan.bits(), target + 1e-9) << target;
    EXPECT_GT(plan.bits(), std::min(target, 8.1875) - 0.25) << target << ": the budget is spent";
    EXPECT_LE(plan.predicted_error(), last_error) << target;
    last_error = plan.predicted_error();
    BpwPlan again = plan_modules(spec, recipe, formats, target);
    fill_errors(again);
    choose_formats(again);
    EXPECT_EQ(again.to_json().dump(), plan.to_json().dump()) << "deterministic at " << target;
  }
}

TEST(BpwPlan, MatchesExhaustiveOnAFixedCase) {
  // Three modules, three formats: every assignment tried.
  const std::vector<QuantFormat> formats = {QuantFormat::parse("int2", 64, true), QuantFormat::parse("int4", 64, true),
                                            QuantFormat::parse("int8", 64, true)};
  BpwPlan plan;
  plan.formats = formats;
  const double err[3][3] = {{100, 10, 1}, {50, 40, 0.5}, {8, 1, 0.1}};
  for (int i = 0; i < 3; ++i) {
    PlannedModule m{str_cat("m", i), 64, 64, {}, {}, 0, {}};
    for (int j = 0; j < 3; ++j) {
      m.bits.push_back(bits_per_weight(formats[size_t(j)], 64));
      m.errors.push_back(err[i][j]);
    }
    plan.modules.push_back(m);
  }
  for (double target : {2.25, 3.0, 3.6, 4.25, 5.0, 6.0, 7.0, 8.25}) {
    plan.target = target;
    choose_formats(plan);
    double best = 1e300;
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b)
        for (int c = 0; c < 3; ++c) {
          const double bits = (plan.modules[0].bits[a] + plan.modules[1].bits[b] + plan.modules[2].bits[c]) / 3;
          if (bits <= target + 1e-12) best = std::min(best, err[0][a] + err[1][b] + err[2][c]);
        }
    EXPECT_LE(plan.bits(), target + 1e-12);
    EXPECT_DOUBLE_EQ(plan.predicted_error(), best) << "target " << target;
  }
}

TEST(BpwPlan, RefusesWhatCannotBePlanned) {
  const ModelSpec spec = tiny_spec();
  const Recipe recipe(QuantFormat::parse("int4", 128, false));
  try {
    plan_modules(spec, recipe, default_bpw_formats(false), 3.0);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--target-bpw 3 is below 3.29"), std::string::npos) << e.what();
  }
  try {  // 96 does not divide the 256 input features of q_proj
    plan_modules(spec, recipe, parse_bpw_formats("int4:g64,int4:g96", false), 5.0);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("int4 g96 asym does not divide model.layers.0.self_attn.q_proj.weight"),
              std::string::npos)
        << e.what();
  }
}

TEST(BpwPlan, SkippedModulesAreNotPlannedAndRulesWin) {
  const ModelSpec spec = tiny_spec();
  Recipe recipe(QuantFormat::parse("int4", 128, false));
  recipe.add_skip("mlp\\.down_proj");
  BpwPlan plan = plan_modules(spec, recipe, default_bpw_formats(false), 4.5);
  EXPECT_EQ(plan.modules.size(), size_t(6 * spec.num_layers));
  fill_errors(plan);
  choose_formats(plan);
  plan.apply(recipe);
  EXPECT_FALSE(recipe.format_for("model.layers.0.mlp.down_proj").has_value());
  for (const auto& m : plan.modules)
    EXPECT_EQ(recipe.format_for(m.module)->describe(), plan.formats[size_t(m.choice)].describe());
}

TEST(BpwPlan, MatchesExhaustiveOnRandomSmallCases) {
  // Four modules of different sizes, four formats, seeded errors and budgets: the best of
  // all 256 assignments (the budget steps are fine enough not to lose one here).
  const std::vector<QuantFormat> formats = {QuantFormat::parse("int2", 64, true), QuantFormat::parse("int3", 64, true),
                                            QuantFormat::parse("int4", 32, true), QuantFormat::parse("int8", 128, true)};
  uint64_t seed = 12345;
  auto rnd = [&] {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return double(seed >> 11) / double(1ull << 53);
  };
  for (int c = 0; c < 200; ++c) {
    BpwPlan plan;
    plan.formats = formats;
    for (int i = 0; i < 4; ++i) {
      PlannedModule m{str_cat("m", i), 64 * (1 + int(rnd() * 4)), 128, {}, {}, 0, {}};
      const double scale = 0.1 + 10 * rnd();
      for (const auto& f : formats) {
        m.bits.push_back(bits_per_weight(f, 128));
        m.errors.push_back(scale * std::exp2(-2 * f.bits) * (0.5 + rnd()));
      }
      plan.modules.push_back(m);
    }
    plan.target = 2.25 + 6 * rnd();
    choose_formats(plan);
    double best = 1e300, n = 0;
    for (const auto& m : plan.modules) n += double(m.out * m.in);
    for (int code = 0; code < 256; ++code) {
      double bits = 0, err = 0;
      for (int i = 0; i < 4; ++i) {
        const int j = (code >> (2 * i)) & 3;
        bits += plan.modules[size_t(i)].bits[size_t(j)] * double(plan.modules[size_t(i)].out * 128);
        err += plan.modules[size_t(i)].errors[size_t(j)];
      }
      if (bits <= plan.target * n * (1 + 1e-12)) best = std::min(best, err);
    }
    EXPECT_LE(plan.bits(), plan.target + 1e-9);
    EXPECT_LE(plan.predicted_error(), best * (1 + 1e-12)) << "case " << c;
  }
}

TEST(BpwPlan, GgufCandidatesTakeLlamaCppsFallbackWhereTheBlockDoesNotDivide) {
  // SmolLM2's geometry: hidden 576 = 2.25 super-blocks, intermediate 1536 = 6.
  ModelSpec spec;
  spec.hidden_size = 576;
  spec.intermediate_size = 1536;
  spec.num_layers = 2;
  spec.n_heads = 9;
  spec.n_kv_heads = 3;
  spec.head_dim = 64;
  spec.vocab_size = 1000;
  const Recipe recipe(QuantFormat::parse("q4_k", 0, true));
  BpwPlan plan = plan_modules(spec, recipe, default_bpw_formats(true, true), 5.0);
  ASSERT_EQ(plan.formats.size(), 5u);  // q3_k q4_k q5_k q6_k q8_0
  for (const auto& m : plan.modules) {
    const bool down = m.module.find("down_proj") != std::string::npos;
    // K-quants on 576 columns are stored (and counted) as Q4_0 / Q5_0 / Q5_1 / Q8_0.
    EXPECT_EQ(plan.format_of(m, 0).name(), down ? "q3_k" : "q4_0") << m.module;
    EXPECT_EQ(plan.format_of(m, 1).name(), down ? "q4_k" : "q5_0") << m.module;
    EXPECT_EQ(plan.format_of(m, 3).name(), down ? "q6_k" : "q8_0") << m.module;
    EXPECT_DOUBLE_EQ(m.bits[0], down ? 3.4375 : 4.5) << m.module;
    EXPECT_DOUBLE_EQ(m.bits[2], down ? 5.5 : 6.0) << m.module;
  }
  fill_errors(plan);
  choose_formats(plan);
  EXPECT_LE(plan.bits(), 5.0 + 1e-12);
  Recipe applied = recipe;
  plan.apply(applied);
  for (const auto& m : plan.modules)
    EXPECT_EQ(applied.format_for(m.module)->name(), plan.chosen(m).name()) << "the stored type, not the candidate";
  const auto report = plan.to_json();  // held: a range-for over a temporary's member dangles
  for (const auto& j : report["modules"]) {  // no K-quant on 576 columns in the report
    if (j["module"].get<std::string>().find("down_proj") == std::string::npos) {
      EXPECT_EQ(j["format"].get<std::string>().find("_k"), std::string::npos) << j.dump();
    }
  }
}
