// Per-layer GPTQ time (int4 g128 sym, no act-order, lazy batch 128, damp 0.01).
//
//   bench_gptq [--dir DIR] [--cols 256,1024,4096] [--shapes 28672x8192,...] [--reps 3] [--threads 2]
//
// Shapes are rows x columns (out x in features; --cols N means N x N). With --dir (what
// bench/bench_gptq.py does) it reads DIR/w_<rows>x<cols>.f32 and DIR/h_<cols>.f32 (raw
// little-endian float32, row-major: weight and Hessian), writes the dequantized result to
// DIR/q_<rows>x<cols>.f32 and prints one line per shape:
// "shape <rows>x<cols> seconds <median> min <min> loss <loss> peak_rss_mib <MiB>"
// (after one untimed warm-up call unless --reps 1; peak RSS of this process so far, inputs included).
// Without --dir it generates seeded inputs itself and prints a small table.
#include <omp.h>
#include <sys/resource.h>

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

struct Shape2 {
  int64_t rows, cols;
  std::string name() const { return std::to_string(rows) + "x" + std::to_string(cols); }
};

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

Tensor read_raw(const std::string& path, int64_t rows, int64_t cols) {
  Tensor t = Tensor::zeros(DType::F32, {rows, cols});
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
void generate(Shape2 shape, Tensor& w, Tensor& h) {
  const int64_t n = shape.cols;
  std::mt19937 g{uint32_t(n)};
  std::normal_distribution<float> nd(0.0f, 1.0f);
  w = Tensor::zeros(DType::F32, {shape.rows, n});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = 0.02f * nd(g);
  const int64_t tokens = std::min<int64_t>(2 * n, 8192), r = 8;
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
    std::vector<Shape2> shapes;
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
        std::stringstream ss(next());
        for (std::string s; std::getline(ss, s, ',');) shapes.push_back({std::atoll(s.c_str()), std::atoll(s.c_str())});
      } else if (a == "--shapes") {
        std::stringstream ss(next());
        for (std::string s; std::getline(ss, s, ',');) {
          const size_t x = s.find('x');
          if (x == std::string::npos) fail_input("--shapes: '", s, "' is not ROWSxCOLS");
          shapes.push_back({std::atoll(s.substr(0, x).c_str()), std::atoll(s.substr(x + 1).c_str())});
        }
      } else {
        std::fprintf(stderr, "usage: %s [--dir DIR] [--cols 256,1024,4096] [--shapes RxC,...] [--reps N] [--threads T]\n", argv[0]);
        return 2;
      }
    }
    if (shapes.empty()) shapes = {{256, 256}, {1024, 1024}, {4096, 4096}};
    log_set_level(std::getenv("QSHARD_BENCH_DEBUG") ? LogLevel::Debug : LogLevel::Quiet);
    const auto scheme = Scheme::make(QuantFormat::parse("int4", 128, true));
    GptqOptions opt;
    if (dir.empty()) std::printf("# qshard GPTQ int4 g128 sym, %d threads\n# %12s %12s %12s %12s\n", omp_get_max_threads(), "rows x cols", "median_s", "min_s", "peak_MiB");
    for (const Shape2& shape : shapes) {
      Tensor w, h;
      if (dir.empty()) generate(shape, w, h);
      else {
        w = read_raw(dir + "/w_" + shape.name() + ".f32", shape.rows, shape.cols);
        h = read_raw(dir + "/h_" + std::to_string(shape.cols) + ".f32", shape.cols, shape.cols);
      }
      std::vector<double> times;
      // Warm-up (thread pools, pages), except with --reps 1: a 70B down_proj takes minutes.
      GptqResult res;
      if (reps > 1) res = gptq_quantize(w, h, *scheme, opt, "bench");
      for (int r = 0; r < reps; ++r) {
        const double t0 = wall_seconds();
        res = gptq_quantize(w, h, *scheme, opt, "bench");
        times.push_back(wall_seconds() - t0);
      }
      std::sort(times.begin(), times.end());
      const double med = times[times.size() / 2];
      if (dir.empty()) {
        std::printf("  %12s %12.4f %12.4f %12.0f\n", shape.name().c_str(), med, times[0], peak_rss_mib());
      } else {
        const double peak = peak_rss_mib();  // before the dequantized copy for the checker
        write_raw(dir + "/q_" + shape.name() + ".f32", res.q.dequantize());
        std::printf("shape %s seconds %.6f min %.6f loss %.6g peak_rss_mib %.0f\n", shape.name().c_str(), med,
                    times[0], res.loss, peak);
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
