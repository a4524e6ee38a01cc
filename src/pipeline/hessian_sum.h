// Σ xxᵀ over calibration tokens whose bits do not depend on how the windows are split
// over ranks or grouped into batches: each window's Gram matrix is computed alone in
// fp32 (SYRK, upper triangle), windows are summed in fp64, the fp64 upper triangles are
// allreduced, and the total is rounded to fp32 once. Summation order then moves the
// result by ~1e-16 relative, far below fp32's rounding, so 1, 2, 3 or 4 ranks hand GPTQ
// the same Hessian. (An fp32 running sum, reduced in fp32, differs in the last bits
// between rank counts, and GPTQ amplifies such differences into flipped codes: 10% of
// down_proj codes on the tiny model.) The packed fp64 triangle has the bytes of the
// full fp32 matrix, so the allreduce costs what an fp32 one did.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "dist/communicator.h"

namespace qshard {

class HessianSum {
 public:
  HessianSum(int64_t in_features, int64_t window_tokens);
  // Host F32 [tokens, in]; every `window_tokens` rows are one window (a shorter tail is
  // one window too).
  void add(const Tensor& x);
  // Collective: sums over ranks and fills sum(). Call once, after the last add.
  void allreduce(Communicator& comm);
  // Host F32 [in, in], symmetric; valid after allreduce().
  Tensor& sum() { return sum_; }
  const Tensor& sum() const { return sum_; }
  int64_t tokens() const { return tokens_; }

 private:
  void accumulate_window();  // upper_ += the upper triangle of scratch_

  int64_t in_, window_;
  std::vector<double> upper_;   // row-major upper triangle, d(d+1)/2
  std::vector<float> scratch_;  // one window's Gram matrix
  Tensor sum_;
  int64_t tokens_ = 0;
};

}  // namespace qshard
