// io/hdf5_file.h: what is written reads back, and failures are exceptions that say which
// call failed on which object, with HDF5's own reason.
#include <gtest/gtest.h>

#include <cstring>

#include "export_test_util.h"
#include "io/hdf5_file.h"

namespace qshard::testing {
namespace {

TEST(Hdf5File, WritesAndReadsBackEveryType) {
  ScratchDir tmp;
  const std::string path = tmp / "t.h5";
  const std::vector<uint8_t> u8 = {0, 1, 255, 7, 8, 9};
  const std::vector<uint16_t> u16 = {0, 0x3f80, 0xffff};
  const std::vector<int32_t> i32 = {-1, 0, 2147483647, -2147483647 - 1};
  const std::vector<int64_t> i64 = {int64_t(1) << 40, -3};
  const std::vector<float> f32 = {1.5f, -0.0f, 3e-40f, 65504.0f};
  const std::vector<double> f64 = {1e300, -2.5};
  {
    H5File f = H5File::create(path);
    H5Group root = f.root();
    root.set_attr("title", "héllo");
    root.set_attr("count", int64_t(-42));
    root.set_attr("ratio", 0.25);
    H5Group g = root.create_group("model.layers.0.mlp.up_proj");
    g.write_dataset("codes", H5Type::U8, {2, 3}, u8.data());
    g.write_dataset("u16", H5Type::U16, {3}, u16.data());
    g.write_dataset("i32", H5Type::I32, {4}, i32.data());
    g.write_dataset("i64", H5Type::I64, {2}, i64.data());
    g.write_dataset("f32", H5Type::F32, {2, 2}, f32.data());
    g.write_dataset("f64", H5Type::F64, {2}, f64.data());
    const float scalar = 0.5f;
    g.write_dataset("scalar", H5Type::F32, {}, &scalar);
    g.write_dataset("empty", H5Type::F32, {0, 4}, nullptr);
    g.set_attr("dtype", "BF16", "u16");
    g.set_attr("bits", int64_t(4));
    g.set_attr("bits", int64_t(8));  // replaced, not duplicated
    g = H5Group();
    root = H5Group();
    f.close();
  }
  const H5File f = H5File::open_read(path);
  const H5Group root = f.root();
  EXPECT_EQ(root.attr_string("title"), "héllo");
  EXPECT_EQ(root.attr_int("count"), -42);
  EXPECT_EQ(root.attr_double("ratio"), 0.25);
  EXPECT_FALSE(root.has_attr("missing"));
  EXPECT_EQ(root.children(), std::vector<std::string>{"model.layers.0.mlp.up_proj"});
  EXPECT_TRUE(root.is_group("model.layers.0.mlp.up_proj"));
  const H5Group g = root.open_group("model.layers.0.mlp.up_proj");
  EXPECT_EQ(g.path(), "/model.layers.0.mlp.up_proj");
  EXPECT_FALSE(g.is_group("codes"));
  EXPECT_TRUE(g.has("codes"));
  EXPECT_FALSE(g.has("nothing"));
  EXPECT_EQ(g.attr_int("bits"), 8);
  EXPECT_EQ(g.attr_string("dtype", "u16"), "BF16");

  auto info = g.dataset_info("codes");
  EXPECT_EQ(info.type, H5Type::U8);
  EXPECT_EQ(info.shape, (Shape{2, 3}));
  std::vector<uint8_t> u8b(6);
  g.read_dataset("codes", H5Type::U8, u8b.data(), u8b.size());
  EXPECT_EQ(u8b, u8);
  std::vector<uint16_t> u16b(3);
  g.read_dataset("u16", H5Type::U16, u16b.data(), 6);
  EXPECT_EQ(u16b, u16);
  std::vector<int32_t> i32b(4);
  g.read_dataset("i32", H5Type::I32, i32b.data(), 16);
  EXPECT_EQ(i32b, i32);
  std::vector<int64_t> i64b(2);
  g.read_dataset("i64", H5Type::I64, i64b.data(), 16);
  EXPECT_EQ(i64b, i64);
  std::vector<float> f32b(4);
  EXPECT_EQ(g.dataset_info("f32").type, H5Type::F32);
  g.read_dataset("f32", H5Type::F32, f32b.data(), 16);
  EXPECT_EQ(std::memcmp(f32b.data(), f32.data(), 16), 0);
  std::vector<double> f64b(2);
  g.read_dataset("f64", H5Type::F64, f64b.data(), 16);
  EXPECT_EQ(f64b, f64);
  EXPECT_EQ(g.dataset_info("scalar").shape, Shape{});
  float s = 0;
  g.read_dataset("scalar", H5Type::F32, &s, 4);
  EXPECT_EQ(s, 0.5f);
  EXPECT_EQ(g.dataset_info("empty").shape, (Shape{0, 4}));
  // HDF5 converts on read when asked for another type.
  std::vector<float> as_float(6);
  g.read_dataset("codes", H5Type::F32, as_float.data(), 24);
  EXPECT_EQ(as_float[2], 255.0f);
}

TEST(Hdf5File, FailuresSayWhatAndWhere) {
  ScratchDir tmp;
  const std::string path = tmp / "t.h5";
  H5File f = H5File::create(path);
  H5Group root = f.root();
  root.create_group("a");
  try {
    root.create_group("a");
    FAIL() << "creating a group twice must throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("H5Gcreate2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("t.h5:/a"), std::string::npos) << msg;
    EXPECT_NE(msg.find("hdf5_file.cpp:"), std::string::npos) << msg;
  }
  EXPECT_THROW(root.open_group("nope"), Error);
  EXPECT_THROW(root.attr_int("nope"), InputError);
  EXPECT_THROW(root.create_group("x/y"), Error);
  std::vector<uint8_t> b(3);
  root.create_group("g").write_dataset("d", H5Type::U8, {3}, b.data());
  EXPECT_THROW(root.open_group("g").read_dataset("d", H5Type::U8, b.data(), 2), InputError);
  root = H5Group();
  f.close();

  write_text(tmp / "text.h5", "definitely not HDF5");
  EXPECT_THROW(H5File::open_read(tmp / "text.h5"), InputError);
  EXPECT_THROW(H5File::open_read(tmp / "absent.h5"), InputError);
  EXPECT_THROW(H5File::create(tmp / "no/such/dir/x.h5"), Error);
}

}  // namespace
}  // namespace qshard::testing
