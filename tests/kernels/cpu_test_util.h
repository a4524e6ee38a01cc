// Shared pieces of the CPU backend tests: seeded inputs, host tensors from vectors, and
// the comparisons against float64 references that every op test makes.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/backend.h"

namespace qshard::test {

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  std::vector<float> normal(size_t n, float stddev = 1.0f) {
    std::normal_distribution<float> d(0.0f, stddev);
    std::vector<float> v(n);
    for (float& x : v) x = d(gen_);
    return v;
  }
  std::vector<float> uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = d(gen_);
    return v;
  }
  int32_t integer(int32_t lo, int32_t hi) {  // inclusive
    return std::uniform_int_distribution<int32_t>(lo, hi)(gen_);
  }

 private:
  std::mt19937_64 gen_;
};

inline Tensor host_f32(Shape shape, const std::vector<float>& values) {
  Tensor t = Tensor::zeros(DType::F32, std::move(shape));
  EXPECT_EQ(size_t(t.numel()), values.size());
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

inline Tensor host_i32(const std::vector<int32_t>& values) {
  Tensor t = Tensor::zeros(DType::I32, {int64_t(values.size())});
  std::memcpy(t.raw(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

inline std::vector<float> values_of(Backend& be, const Tensor& t) {
  Tensor h = be.download(t);
  const float* p = h.data<float>();
  return std::vector<float>(p, p + h.numel());
}

// The guard every numeric test runs: a kernel that wrote nothing, or wrote NaN, would
// otherwise pass a loose comparison against a reference that is itself near zero.
inline void expect_sane(const std::vector<float>& got, const std::string& what,
                        bool nonzero = true) {
  EXPECT_TRUE(std::none_of(got.begin(), got.end(), [](float x) { return std::isnan(x); }))
      << what << ": output has NaN";
  EXPECT_TRUE(!nonzero || got.empty() ||
              std::any_of(got.begin(), got.end(), [](float x) { return x != 0.0f; }))
      << what << ": output is all zero";
}

inline bool any_nonzero(const std::vector<double>& ref) {
  return std::any_of(ref.begin(), ref.end(), [](double x) { return x != 0.0; });
}

// max|got - ref| / max|ref|: the error measured against the output's own scale.
inline double normwise_error(const std::vector<float>& got, const std::vector<double>& ref) {
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err = std::max(err, std::abs(double(got[i]) - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return scale > 0.0 ? err / scale : err;
}

// max over i of |got - ref| / max(|ref|, floor): elementwise relative error, absolute
// below `floor`.
inline double elementwise_error(const std::vector<float>& got, const std::vector<double>& ref,
                                double floor) {
  double err = 0.0;
  for (size_t i = 0; i < ref.size(); ++i)
    err = std::max(err, std::abs(double(got[i]) - ref[i]) / std::max(std::abs(ref[i]), floor));
  return err;
}

// Sanity, sizes and a tolerance in one go.
inline void expect_normwise(const std::vector<float>& got, const std::vector<double>& ref,
                            double tol, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  expect_sane(got, what, any_nonzero(ref));
  EXPECT_LE(normwise_error(got, ref), tol) << what;
}

inline void expect_elementwise(const std::vector<float>& got, const std::vector<double>& ref,
                               double tol, double floor, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  expect_sane(got, what, any_nonzero(ref));
  EXPECT_LE(elementwise_error(got, ref, floor), tol) << what;
}

}  // namespace qshard::test
