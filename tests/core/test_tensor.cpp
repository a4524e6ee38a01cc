#include <gtest/gtest.h>

#include "core/error.h"
#include "core/tensor.h"

using namespace qshard;

TEST(Tensor, ZerosShapeAndViews) {
  Tensor t = Tensor::zeros(DType::F32, {3, 4});
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  for (int i = 0; i < 12; ++i) t.data<float>()[i] = float(i);
  Tensor r = t.rows(1, 3);
  EXPECT_EQ(r.shape(), (Shape{2, 4}));
  EXPECT_EQ(r.data<float>()[0], 4.0f);
  Tensor flat = t.reshape({12});
  EXPECT_EQ(flat.data<float>()[11], 11.0f);
  EXPECT_THROW(t.reshape({5}), Error);
  EXPECT_THROW(t.rows(2, 4), Error);
  EXPECT_EQ(shape_str(t.shape()), "[3, 4]");
}

TEST(Tensor, ToF32FromBf16) {
  Tensor t = Tensor::zeros(DType::BF16, {2});
  t.data<uint16_t>()[0] = f32_to_bf16(1.5f);
  t.data<uint16_t>()[1] = f32_to_bf16(-3.0f);
  Tensor f = t.to_f32();
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_EQ(f.data<float>()[0], 1.5f);
  EXPECT_EQ(f.data<float>()[1], -3.0f);
}
