// zeros, upload, download and embedding: the ops that move or convert data.
#include <string>

#include "core/error.h"
#include "tests/kernels/cpu_test_util.h"

namespace qshard::test {
namespace {

Tensor host_u16(DType dtype, Shape shape, const std::vector<uint16_t>& bits) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  std::memcpy(t.raw(), bits.data(), bits.size() * 2);
  return t;
}

TEST(CpuMemory, ZerosUploadDownload) {
  auto be = make_cpu_backend();
  EXPECT_EQ(be->name(), "cpu");
  Tensor z = be->zeros(DType::F32, {3, 5});
  EXPECT_EQ(z.shape(), (Shape{3, 5}));
  for (float v : values_of(*be, z)) EXPECT_EQ(v, 0.0f);

  Tensor host = host_f32({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor dev = be->upload(host);
  host.data<float>()[0] = 99.0f;  // upload copied
  Tensor back = be->download(dev);
  dev.data<float>()[1] = 99.0f;  // download copied
  EXPECT_EQ(back.dtype(), DType::F32);
  EXPECT_EQ(back.shape(), (Shape{2, 3}));
  EXPECT_EQ(std::vector<float>(back.data<float>(), back.data<float>() + 6),
            (std::vector<float>{1, 2, 3, 4, 5, 6}));

  Tensor ids = be->upload(host_i32({7, -3, 2147483647}));
  EXPECT_EQ(ids.dtype(), DType::I32);
  EXPECT_EQ(be->download(ids).data<int32_t>()[2], 2147483647);
}

TEST(CpuMemory, UploadConvertsHalfFloatsToF32) {
  auto be = make_cpu_backend();
  // bf16: 1.0, -2.5, 3.140625, the smallest normal; f16: 1.0, -2.5, 65504, 2^-24.
  Tensor bf = be->upload(host_u16(DType::BF16, {2, 2}, {0x3F80, 0xC020, 0x4049, 0x0080}));
  Tensor hf = be->upload(host_u16(DType::F16, {4}, {0x3C00, 0xC100, 0x7BFF, 0x0001}));
  EXPECT_EQ(bf.dtype(), DType::F32);
  EXPECT_EQ(bf.shape(), (Shape{2, 2}));
  EXPECT_EQ(values_of(*be, bf), (std::vector<float>{1.0f, -2.5f, 3.140625f, 0x1p-126f}));
  EXPECT_EQ(values_of(*be, hf), (std::vector<float>{1.0f, -2.5f, 65504.0f, 0x1p-24f}));

  // Large enough to take the parallel conversion path.
  const int64_t n = (int64_t(1) << 20) + 3;
  std::vector<uint16_t> bits(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) bits[i] = uint16_t(0x3F80 + (i % 97));
  const auto big = values_of(*be, be->upload(host_u16(DType::BF16, {n}, bits)));
  for (int64_t i = 0; i < n; i += 4099) ASSERT_EQ(big[i], bf16_to_f32(bits[i])) << i;
  EXPECT_EQ(big[n - 1], bf16_to_f32(bits[n - 1]));

  Tensor f64 = Tensor::zeros(DType::F64, {2});
  f64.data<double>()[0] = 0.5, f64.data<double>()[1] = -1e300;
  EXPECT_EQ(values_of(*be, be->upload(f64)), (std::vector<float>{0.5f, -INFINITY}));

  EXPECT_THROW(be->upload(Tensor::zeros(DType::I64, {2})), Error);
}

class EmbeddingTest : public ::testing::TestWithParam<DType> {};

TEST_P(EmbeddingTest, GathersAndConvertsRows) {
  const DType dtype = GetParam();
  auto be = make_cpu_backend();
  const int64_t vocab = 37, dim = 13;
  Rng rng(11);
  Tensor table = Tensor::zeros(dtype, {vocab, dim});
  const auto vals = rng.normal(vocab * dim);
  for (int64_t i = 0; i < vocab * dim; ++i) {
    if (dtype == DType::F32) table.data<float>()[i] = vals[i];
    if (dtype == DType::BF16) table.data<uint16_t>()[i] = f32_to_bf16(vals[i]);
    if (dtype == DType::F16) table.data<uint16_t>()[i] = f32_to_f16(vals[i]);
  }
  const Tensor table_f32 = table.to_f32();
  const std::vector<int32_t> ids{0, 36, 5, 5, 17, 1, 36};
  Tensor out = be->zeros(DType::F32, {int64_t(ids.size()), dim});
  be->embedding(table, host_i32(ids), out);
  const auto got = values_of(*be, out);
  expect_sane(got, "embedding");
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t c = 0; c < dim; ++c)
      ASSERT_EQ(got[t * dim + c], table_f32.data<float>()[ids[t] * dim + c]) << t << "," << c;
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmbeddingTest,
                         ::testing::Values(DType::F32, DType::BF16, DType::F16));

TEST(Embedding, LargeGatherMatchesRowByRow) {
  auto be = make_cpu_backend();
  const int64_t vocab = 300, dim = 257, tokens = 700;  // takes the parallel path
  Rng rng(3);
  Tensor table = host_f32({vocab, dim}, rng.normal(vocab * dim));
  std::vector<int32_t> ids(tokens);
  for (auto& id : ids) id = rng.integer(0, vocab - 1);
  Tensor out = be->zeros(DType::F32, {tokens, dim});
  be->embedding(table, host_i32(ids), out);
  const auto got = values_of(*be, out);
  for (int64_t t = 0; t < tokens; ++t)
    ASSERT_EQ(0, std::memcmp(&got[t * dim], table.data<float>() + ids[t] * dim, dim * 4)) << t;
}

TEST(Embedding, OutOfRangeIdIsAnInputErrorNamingIdAndVocab) {
  auto be = make_cpu_backend();
  Tensor table = Tensor::zeros(DType::BF16, {50, 4});
  Tensor out = be->zeros(DType::F32, {3, 4});
  for (int32_t bad : {50, -1, 123456}) {
    try {
      be->embedding(table, host_i32({1, bad, 2}), out);
      ADD_FAILURE() << "no error for token id " << bad;
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("50"), std::string::npos) << msg;
    }
  }
  Tensor out_bad = be->zeros(DType::F32, {3, 5});
  EXPECT_THROW(be->embedding(table, host_i32({1, 2, 3}), out_bad), Error);
  Tensor ids_f32 = host_f32({3}, {1, 2, 3});
  EXPECT_THROW(be->embedding(table, ids_f32, out), Error);
  EXPECT_THROW(be->embedding(Tensor::zeros(DType::I32, {50, 4}), host_i32({1, 2, 3}), out), Error);
}

}  // namespace
}  // namespace qshard::test
