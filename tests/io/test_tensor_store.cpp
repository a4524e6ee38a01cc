// TensorStore over checkpoint directories: index.json resolution and its failure modes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io_test_util.h"

using namespace qshard;
using qshard::testing::expect_input_error;
using qshard::testing::TempDir;
using qshard::testing::write_bytes;

namespace {

Tensor iota_f32(int n, float start) {
  Tensor t = Tensor::zeros(DType::F32, {n});
  for (int i = 0; i < n; ++i) t.data<float>()[i] = start + float(i);
  return t;
}

// Two shards: a,b in shard 1 and c in shard 2.
void write_sharded(const TempDir& dir) {
  SafetensorsWriter w(dir.str(), "model", 16);
  w.add("a", iota_f32(2, 0));
  w.add("b", iota_f32(2, 10));
  w.add("c", iota_f32(4, 20));
  ASSERT_EQ(w.finish().size(), 2u);
}

void rewrite_index(const TempDir& dir, const nlohmann::json& weight_map) {
  write_bytes(dir / "model.safetensors.index.json",
              nlohmann::json({{"metadata", {{"total_size", 32}}}, {"weight_map", weight_map}}).dump());
}

}  // namespace

TEST(TensorStore, SingleFileDirectory) {
  TempDir dir;
  SafetensorsWriter w(dir.str());
  w.add("w", iota_f32(3, 1));
  w.finish();
  TensorStore s = TensorStore::open(dir.str());
  EXPECT_EQ(s.location(), dir.str());
  EXPECT_TRUE(s.contains("w"));
  EXPECT_EQ(s.get("w").data<float>()[2], 3.0f);
  TensorStore f = TensorStore::open_file(dir / "model.safetensors");
  EXPECT_EQ(f.names(), std::vector<std::string>{"w"});
  EXPECT_EQ(TensorStore::open(dir / "model.safetensors").shape("w"), Shape{3});
}

TEST(TensorStore, ShardedDirectoryThroughTheIndex) {
  TempDir dir;
  write_sharded(dir);
  TensorStore s = TensorStore::open(dir.str());
  EXPECT_EQ(s.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(s.get("b").data<float>()[1], 11.0f);
  EXPECT_EQ(s.get("c").data<float>()[3], 23.0f);
  const TensorSource& src = s;  // what model/ sees
  EXPECT_TRUE(src.contains("c"));
  EXPECT_FALSE(src.contains("d"));
}

TEST(TensorStore, MissingTensorNamesItAndTheCheckpoint) {
  TempDir dir;
  write_sharded(dir);
  TensorStore s = TensorStore::open(dir.str());
  expect_input_error([&] { s.get("model.layers.0.mlp.gate_proj.weight"); },
                     {"model.layers.0.mlp.gate_proj.weight", dir.str(), "architecture"});
  expect_input_error([&] { s.info("nope"); }, {"nope"});
}

TEST(TensorStore, NoSafetensorsInDirectory) {
  TempDir dir;
  write_bytes(dir / "pytorch_model.bin", "x");
  expect_input_error([&] { TensorStore::open(dir.str()); }, {dir.str(), "no safetensors"});
  expect_input_error([&] { TensorStore::open(dir / "absent"); }, {dir / "absent"});
}

TEST(TensorStore, IndexNamesMissingShard) {
  TempDir dir;
  write_sharded(dir);
  std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
  expect_input_error([&] { TensorStore::open(dir.str()); },
                     {"model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing"});
}

TEST(TensorStore, IndexNamesTensorAbsentFromShard) {
  TempDir dir;
  write_sharded(dir);
  rewrite_index(dir, {{"a", "model-00001-of-00002.safetensors"},
                      {"c", "model-00001-of-00002.safetensors"}});
  expect_input_error([&] { TensorStore::open(dir.str()); },
                     {"model.safetensors.index.json", "'c'", "model-00001-of-00002.safetensors"});
}

TEST(TensorStore, IndexShardPathMustStayInTheDirectory) {
  TempDir dir;
  write_sharded(dir);
  for (const char* bad : {"../model-00001-of-00002.safetensors", "..", "/etc/passwd", "sub/x", ""}) {
    rewrite_index(dir, {{"a", bad}});
    expect_input_error([&] { TensorStore::open(dir.str()); },
                       {"model.safetensors.index.json", "'a'", "plain file name"});
  }
}

TEST(TensorStore, IndexNotJsonOrWithoutWeightMap) {
  TempDir dir;
  write_sharded(dir);
  write_bytes(dir / "model.safetensors.index.json", "{\"weight_map\": ");
  expect_input_error([&] { TensorStore::open(dir.str()); },
                     {"model.safetensors.index.json", "not valid JSON"});
  write_bytes(dir / "model.safetensors.index.json", "{\"metadata\": {}}");
  expect_input_error([&] { TensorStore::open(dir.str()); }, {"weight_map"});
  rewrite_index(dir, {{"a", 5}});
  expect_input_error([&] { TensorStore::open(dir.str()); }, {"'a'"});
}

TEST(TensorStore, CorruptShardNamesTheShard) {
  TempDir dir;
  write_sharded(dir);
  std::filesystem::resize_file(dir / "model-00002-of-00002.safetensors", 20);
  expect_input_error([&] { TensorStore::open(dir.str()); }, {dir / "model-00002-of-00002.safetensors"});
}
