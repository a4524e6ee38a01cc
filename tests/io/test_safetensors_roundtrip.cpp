// Write-then-read round trips through SafetensorsWriter and SafetensorsFile.
#include <gtest/gtest.h>

#include <cstring>

#include "io/safetensors.h"
#include "io_test_util.h"

using namespace qshard;
using qshard::testing::TempDir;

namespace {

constexpr DType kAllDTypes[] = {DType::BF16, DType::F16,  DType::F32, DType::F64,
                                DType::I64,  DType::I32,  DType::I16, DType::I8,
                                DType::U8,   DType::BOOL, DType::F8_E4M3};

// Bytes, not values: a round trip must be bit-exact whatever the bits mean.
Tensor patterned(DType dtype, Shape shape, int seed) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t(i * 37 + seed * 11 + 5);
  if (dtype == DType::BOOL)
    for (size_t i = 0; i < t.nbytes(); ++i) p[i] &= 1;
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

}  // namespace

TEST(SafetensorsRoundTrip, EveryDTypeAndOddShapes) {
  TempDir dir;
  const std::vector<Shape> shapes = {{3, 5, 7}, {}, {0, 4}, {4, 0}, {1}, {2, 3}};
  std::vector<std::pair<std::string, Tensor>> written;
  {
    SafetensorsWriter w(dir.str());
    int seed = 0;
    for (DType d : kAllDTypes)
      for (const Shape& s : shapes) {
        std::string name = "t." + std::string(dtype_name(d)) + "." + shape_str(s);
        written.emplace_back(name, patterned(d, s, seed++));
        w.add(name, written.back().second);
      }
    EXPECT_EQ(w.finish(), std::vector<std::string>{dir / "model.safetensors"});
  }
  SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_EQ(f.path(), dir / "model.safetensors");
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  std::vector<std::string> expected_names;
  for (const auto& [name, t] : written) expected_names.push_back(name);
  EXPECT_EQ(f.names(), expected_names);  // offset order is the order added
  for (const auto& [name, t] : written) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(f.contains(name));
    const auto& info = f.info(name);
    EXPECT_EQ(info.dtype, t.dtype());
    EXPECT_EQ(info.shape, t.shape());
    EXPECT_EQ(info.end - info.begin, t.nbytes());
    Tensor r = f.get(name);
    EXPECT_EQ(r.dtype(), t.dtype());
    EXPECT_EQ(r.shape(), t.shape());
    EXPECT_EQ(r.device(), Device::Host);
    EXPECT_TRUE(r.defined());
    EXPECT_TRUE(same_bytes(r, t));
  }
  EXPECT_FALSE(f.contains("absent"));
  EXPECT_THROW(f.get("absent"), InputError);
}

TEST(SafetensorsRoundTrip, ValuesSurviveConversion) {
  TempDir dir;
  Tensor bf = Tensor::zeros(DType::BF16, {3});
  const float vals[] = {1.5f, -3.0f, 0.0078125f};
  for (int i = 0; i < 3; ++i) bf.data<uint16_t>()[i] = f32_to_bf16(vals[i]);
  SafetensorsWriter w(dir.str(), "model", 5ull << 30, {{"format", "pt"}, {"source", "qshard"}});
  w.add("bf", bf);
  w.finish();
  SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_EQ(f.metadata().at("source"), "qshard");
  Tensor r = f.get("bf").to_f32();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(r.data<float>()[i], vals[i]);
}

TEST(SafetensorsRoundTrip, ViewsAreZeroCopyAndOutliveTheFile) {
  TempDir dir;
  {
    SafetensorsWriter w(dir.str());
    w.add("a", patterned(DType::F32, {64}, 1));
    w.add("b", patterned(DType::F32, {64}, 2));
    w.finish();
  }
  Tensor b;
  const void* first = nullptr;
  {
    SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
    b = f.get("b");
    first = b.raw();
    EXPECT_EQ(f.get("b").raw(), first);  // the same mapped bytes, not a fresh copy
    EXPECT_EQ(static_cast<const char*>(f.get("b").raw()) - static_cast<const char*>(f.get("a").raw()),
              256);
  }
  // The mapping is alive while a view holds it (ASan/segfault would say otherwise).
  EXPECT_TRUE(same_bytes(b, patterned(DType::F32, {64}, 2)));
}

// safetensors does not promise aligned data: a header length that is not a multiple of
// 8 (legal, some writers emit it) misaligns every tensor. get() must then copy.
TEST(SafetensorsRoundTrip, UnalignedDataIsCopiedToAlignedMemory) {
  TempDir dir;
  const std::string header =
      R"({"f":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"u":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}})";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  float v[2] = {2.5f, -1.0f};
  std::string data(reinterpret_cast<const char*>(v), 8);
  data += "xyz";
  qshard::testing::write_bytes(dir / "u.safetensors", qshard::testing::safetensors_bytes(header, data));
  SafetensorsFile f = SafetensorsFile::open(dir / "u.safetensors");
  Tensor t = f.get("f");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % alignof(float), 0u);
  EXPECT_EQ(t.data<float>()[0], 2.5f);
  EXPECT_EQ(t.data<float>()[1], -1.0f);
  EXPECT_EQ(std::string(static_cast<const char*>(f.get("u").raw()), 3), "xyz");
  EXPECT_EQ(f.get("u").raw(), f.get("u").raw());  // bytes need no alignment: still a view
}
