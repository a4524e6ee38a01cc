// How work is split over ranks: contiguous, balanced, the same on every rank.
#pragma once

#include <cstdint>

namespace qshard {

struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// Part `index` of [0, n) split into `parts` contiguous ranges whose sizes differ by at
// most one (the first n % parts ranges get the extra item).
Range split_range(int64_t n, int parts, int index);

// The same split in whole units of `unit` items (the last range may end mid-unit at n):
// every range starts at a multiple of `unit`, so per-unit work lines up at any `parts`.
Range split_range_aligned(int64_t n, int parts, int index, int64_t unit);

}  // namespace qshard
