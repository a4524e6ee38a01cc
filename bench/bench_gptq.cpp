// Per-layer GPTQ time (int4 g128 sym, no act-order, lazy batch 128, damp 0.01).
//
//   bench_gptq [--dir DIR] [--cols 256,1024,4096] [--reps 3] [--threads 2]
//
// With --dir (what bench/bench_gptq.py does) it reads DIR/w_<n>.f32 and DIR/h_<n>.f32 (raw
// little-endian float32, [n, n] row-major: weight and Hessian), writes the dequantized
// result to DIR/q_<n>.f32 and prints one line per size:  "n <n> seconds <median> min <min>"
// (after one untimed warm-up call).
// Without --dir it generates seeded inputs itself and prints a small table.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "kernels/cpu/blas_core.h"
#include "quant/gptq.h"

using namespace qshard;

namespace {

Tensor read_raw(const std::string& path, int64_t n) {
  Tensor t = Tensor::zeros(DType::F32, {n, n});
  std::ifstream f(path, std::ios::binary);
  if (!f) fail_input("cannot open ", path);
  f.read(static_cast<char*>(t.raw()), std::streamsize(t.nbytes()));
  if (f.gcount() != std::streamsize(t.nbytes())) fail_input(path, " is shorter than ", t.nbytes(), " bytes");
  return t;
}

void write_raw(const std::string& path, const Tensor& t) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(t.raw()), std::streamsize(t.nbytes()));
  if (!f) fail_input("cannot write ", path);
}

// Seeded stand-in for a layer: W ~ N(0, 0.02²), X = Z + F·Aᵀ (rank 8) with outlier
// channels, H = 2/N XᵀX.
void generate(int64_t n, Tensor& w, Tensor& h) {
  std::mt19937 g{uint32_t(n)};
  std::normal_distribution<float> nd(0.0f, 1.0f);
  w = Tensor::zeros(DType::F32, {n, n});
  for (int64_t i = 0; i < n * n; ++i) w.data<float>()[i] = 0.02f * nd(g);
  const int64_t tokens = 2 * n, r = 8;
  std::vector<float> A(static_cast<size_t>(n * r)), f(static_cast<size_t>(r));
  for (auto& v : A) v = 0.7f * nd(g);
  Tensor x = Tensor::zeros(DType::F32, {tokens, n});
  for (int64_t t = 0; t < tokens; ++t) {
    for (auto& v : f) v = nd(g);
    float* xr = x.data<float>() + t * n;
    for (int64_t c = 0; c < n; ++c) {
      float v = nd(g);
      for (int64_t k = 0; k < r; ++k) v += f[size_t(k)] * A[size_t(c * r + k)];
      xr[c] = (c % 61 == 7) ? 12.0f * v : v;
    }
  }
  HessianAccumulator acc(n);
  acc.add(x);
  h = acc.normalized();
}

}  // namespace

int main(int argc, char** argv) {
  qshard::cpu::reexec_for_blas_core(argv);  // the AVX kernels, as qshard itself runs
  try {
    std::string dir;
    std::vector<int64_t> cols = {256, 1024, 4096};
    int reps = 3;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) fail_input(a, " needs a value");
        return argv[++i];
      };
      if (a == "--dir") dir = next();
      else if (a == "--reps") reps = std::max(1, std::atoi(next().c_str()));
      else if (a == "--threads") omp_set_num_threads(std::atoi(next().c_str()));
      else if (a == "--cols") {
        cols.clear();
        std::stringstream ss(next());
        for (std::string s; std::getline(ss, s, ',');) cols.push_back(std::atoll(s.c_str()));
      } else {
        std::fprintf(stderr, "usage: %s [--dir DIR] [--cols 256,1024,4096] [--reps N] [--threads T]\n", argv[0]);
        return 2;
      }
    }
    log_set_level(std::getenv("QSHARD_BENCH_DEBUG") ? LogLevel::Debug : LogLevel::Quiet);
    const auto scheme = Scheme::make(QuantFormat::parse("int4", 128, true));
    GptqOptions opt;
    if (dir.empty()) std::printf("# qshard GPTQ int4 g128 sym, rows = columns, %d threads\n# %8s %12s %12s\n", omp_get_max_threads(), "columns", "median_s", "min_s");
    for (int64_t n : cols) {
      Tensor w, h;
      if (dir.empty()) generate(n, w, h);
      else {
        w = read_raw(dir + "/w_" + std::to_string(n) + ".f32", n);
        h = read_raw(dir + "/h_" + std::to_string(n) + ".f32", n);
      }
      std::vector<double> times;
      GptqResult res = gptq_quantize(w, h, *scheme, opt, "bench");  // warm-up (thread pools, pages)
      for (int r = 0; r < reps; ++r) {
        const double t0 = wall_seconds();
        res = gptq_quantize(w, h, *scheme, opt, "bench");
        times.push_back(wall_seconds() - t0);
      }
      std::sort(times.begin(), times.end());
      const double med = times[times.size() / 2];
      if (dir.empty()) {
        std::printf("  %8ld %12.4f %12.4f\n", long(n), med, times[0]);
      } else {
        write_raw(dir + "/q_" + std::to_string(n) + ".f32", res.q.dequantize());
        std::printf("n %ld seconds %.6f min %.6f loss %.6g\n", long(n), med, times[0], res.loss);
      }
      std::fflush(stdout);
    }
    return 0;
  } catch (const InputError& e) {
    std::fprintf(stderr, "bench_gptq: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gptq: %s\n", e.what());
    return 1;
  }
}
