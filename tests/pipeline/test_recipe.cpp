#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "pipeline/recipe.h"

using namespace qshard;

TEST(Recipe, LastMatchingRuleWins) {
  const QuantFormat int4 = QuantFormat::parse("int4", 128, true);
  Recipe r(int4);
  const std::string path = testing::TempDir() + "/recipe.json";
  std::ofstream(path) << R"({"rules": [
      {"match": "mlp\\.down_proj", "format": "int8", "group_size": -1},
      {"match": "layers\\.1\\.mlp\\.down_proj", "skip": true}]})";
  r.load_file(path);
  r.add_skip("self_attn\\.k_proj$");
  EXPECT_EQ(r.format_for("model.layers.0.self_attn.q_proj")->describe(), int4.describe());
  EXPECT_FALSE(r.format_for("model.layers.0.self_attn.k_proj").has_value());
  const auto down0 = r.format_for("model.layers.0.mlp.down_proj");
  ASSERT_TRUE(down0.has_value());
  EXPECT_EQ(down0->bits, 8);
  EXPECT_EQ(down0->group_size, -1);
  EXPECT_FALSE(r.format_for("model.layers.1.mlp.down_proj").has_value());
}

TEST(Recipe, BadRecipesNameTheRule) {
  Recipe r(QuantFormat::parse("int4", 128, true));
  const std::string path = testing::TempDir() + "/bad.json";
  std::ofstream(path) << R"({"rules": [{"match": "ok"}, {"match": "(", "skip": true}]})";
  try {
    r.load_file(path);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rules[0]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.add_skip("(unclosed"), InputError);
  std::ofstream(path) << R"({"rules": [{"match": "x", "format": "int9"}]})";
  EXPECT_THROW(r.load_file(path), InputError);
}

// llm-compressor's ignore list: exact names, "re:" patterns anchored at the name's start,
// and ignored modules stay unquantized whatever a rule says.
TEST(Recipe, IgnoreListLikeLlmCompressor) {
  const QuantFormat int4 = QuantFormat::parse("int4", 128, true);
  Recipe r(int4);
  const std::string path = testing::TempDir() + "/ignore.json";
  std::ofstream(path) << R"({"rules": [{"match": "down_proj", "format": "int8", "group_size": -1}],
      "ignore": ["model.layers.0.mlp.down_proj", "re:.*self_attn\\.k_proj$", "re:layers"]})";
  r.load_file(path);
  EXPECT_FALSE(r.format_for("model.layers.0.mlp.down_proj").has_value());
  EXPECT_EQ(r.format_for("model.layers.1.mlp.down_proj")->bits, 8);
  EXPECT_EQ(r.format_for("model.layers.10.mlp.down_proj")->bits, 8);  // exact, not a prefix
  EXPECT_FALSE(r.format_for("model.layers.3.self_attn.k_proj").has_value());
  EXPECT_TRUE(r.format_for("model.layers.3.self_attn.q_proj").has_value());  // "re:layers" is anchored
  std::ofstream(path) << R"({"ignore": "lm_head"})";
  EXPECT_THROW(r.load_file(path), InputError);
  std::ofstream(path) << R"({"ignore": ["re:("]})";
  try {
    r.load_file(path);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("ignore[0]"), std::string::npos) << e.what();
  }
}
