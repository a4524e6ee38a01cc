// SafetensorsWriter: shard layout, naming, index, and what it leaves behind on failure.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io_test_util.h"

using namespace qshard;
using qshard::testing::read_bytes;
using qshard::testing::TempDir;

namespace {

Tensor filled(DType dtype, Shape shape, uint8_t byte) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  std::memset(t.raw(), byte, t.nbytes());
  return t;
}

uint64_t header_length(const std::string& path) {
  const std::string b = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | uint8_t(b.at(i));
  return n;
}

}  // namespace

TEST(SafetensorsWriter, SingleShardIsModelSafetensorsWithPaddedHeader) {
  TempDir dir;
  SafetensorsWriter w(dir.str());
  w.add("x", filled(DType::F16, {3}, 1));
  w.add("y", filled(DType::I8, {5}, 2));
  EXPECT_EQ(w.finish(), std::vector<std::string>{dir / "model.safetensors"});
  EXPECT_EQ(dir.files(), std::vector<std::string>{"model.safetensors"});  // no index, no temps
  EXPECT_EQ(header_length(dir / "model.safetensors") % 8, 0u);
  const std::string b = read_bytes(dir / "model.safetensors");
  const auto header = nlohmann::ordered_json::parse(b.substr(8, header_length(dir / "model.safetensors")));
  EXPECT_EQ(header["x"]["dtype"], "F16");
  EXPECT_EQ(header["y"]["data_offsets"], nlohmann::ordered_json({6, 11}));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
}

TEST(SafetensorsWriter, ShardsAtTheLimitAndWritesIndex) {
  TempDir dir;
  SafetensorsWriter w(dir.str(), "model", 100);
  w.add("a", filled(DType::F32, {10}, 1));  // 40 bytes
  w.add("b", filled(DType::F32, {10}, 2));  // 80: still fits
  w.add("c", filled(DType::F32, {10}, 3));  // 120 > 100: new shard
  w.add("big", filled(DType::U8, {300}, 4));  // over the limit alone: its own shard
  w.add("d", filled(DType::BF16, {2}, 5));
  const auto paths = w.finish();
  ASSERT_EQ(paths.size(), 4u);
  EXPECT_EQ(paths[0], dir / "model-00001-of-00004.safetensors");
  EXPECT_EQ(paths[3], dir / "model-00004-of-00004.safetensors");
  EXPECT_EQ(dir.files(), (std::vector<std::string>{
                             "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                             "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
                             "model.safetensors.index.json"}));
  const auto index = nlohmann::json::parse(read_bytes(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 40 * 3 + 300 + 4);
  EXPECT_EQ(index["weight_map"], nlohmann::json({{"a", "model-00001-of-00004.safetensors"},
                                                 {"b", "model-00001-of-00004.safetensors"},
                                                 {"c", "model-00002-of-00004.safetensors"},
                                                 {"big", "model-00003-of-00004.safetensors"},
                                                 {"d", "model-00004-of-00004.safetensors"}}));
  for (const auto& p : paths) EXPECT_EQ(header_length(p) % 8, 0u);

  TensorStore s = TensorStore::open(dir.str());
  EXPECT_EQ(s.names(), (std::vector<std::string>{"a", "b", "c", "big", "d"}));
  EXPECT_EQ(s.shape("big"), Shape{300});
  EXPECT_EQ(s.info("d").dtype, DType::BF16);
  EXPECT_EQ(static_cast<const uint8_t*>(s.get("c").raw())[39], 3);
  EXPECT_EQ(static_cast<const uint8_t*>(s.get("big").raw())[299], 4);
}

TEST(SafetensorsWriter, RewriteRemovesStaleOutputsOfEarlierRuns) {
  TempDir dir;
  {
    SafetensorsWriter w(dir.str(), "model", 8);
    for (const char* n : {"a", "b", "c"}) w.add(n, filled(DType::F32, {2}, 1));
    EXPECT_EQ(w.finish().size(), 3u);
  }
  qshard::testing::write_bytes(dir / "model-keep.safetensors", "not ours");
  {
    SafetensorsWriter w(dir.str(), "model", 16);  // now 2 shards
    for (const char* n : {"a", "b", "c"}) w.add(n, filled(DType::F32, {2}, 2));
    EXPECT_EQ(w.finish().size(), 2u);
  }
  EXPECT_EQ(dir.files(), (std::vector<std::string>{
                             "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                             "model-keep.safetensors", "model.safetensors.index.json"}));
  {
    SafetensorsWriter w(dir.str());  // now a single file: the index must go
    w.add("z", filled(DType::U8, {1}, 9));
    w.finish();
  }
  EXPECT_EQ(dir.files(), (std::vector<std::string>{"model-keep.safetensors", "model.safetensors"}));
  EXPECT_EQ(TensorStore::open(dir.str()).names(), std::vector<std::string>{"z"});
}

TEST(SafetensorsWriter, WithoutFinishLeavesNoFiles) {
  TempDir dir;
  {
    SafetensorsWriter w(dir.str(), "model", 16);
    w.add("a", filled(DType::F32, {4}, 1));
    w.add("b", filled(DType::F32, {4}, 1));  // closes shard 1: a shard temporary exists
    EXPECT_FALSE(dir.files().empty());
  }
  EXPECT_TRUE(dir.files().empty());
}

TEST(SafetensorsWriter, DuplicateNameIsAnError) {
  TempDir dir;
  SafetensorsWriter w(dir.str());
  w.add("a", filled(DType::F32, {1}, 1));
  try {
    w.add("a", filled(DType::F32, {1}, 1));
    FAIL() << "duplicate accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'a'"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsWriter, NoTensorsGivesAMetadataOnlyFile) {
  TempDir dir;
  SafetensorsWriter w(dir.str());
  w.finish();
  SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_TRUE(f.names().empty());
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST(SafetensorsWriter, UnwritableDirectoryNamesIt) {
  qshard::testing::expect_input_error([] { SafetensorsWriter w("/dev/null/out"); },
                                      {"/dev/null/out"});
}
