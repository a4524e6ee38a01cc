#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace qshard::bench {

// p[i] ~ N(0, stddev²) from a counter hash (seeded, reproducible); columns c of a
// [*, cols] matrix with c % outlier_every == 7 scaled by outlier_scale (0: none).
void fill_normal(float* p, int64_t n, uint64_t seed, float stddev, int64_t cols,
                 int64_t outlier_every, float outlier_scale, cudaStream_t stream);

}  // namespace qshard::bench
