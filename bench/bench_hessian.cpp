// Σ xxᵀ over calibration windows as the pipeline sums it (pipeline/hessian_sum.h): fp32
// SYRK per window, fp64 accumulation of the upper triangle, fp32 symmetric result.
// One run compares the accumulator on 1 thread with it on N threads (and the SYRK alone)
// at the 70B layer's input widths, and checks both give the same bits.
//
//   bench_hessian [--dims 4096,8192,28672] [--windows 4] [--window-tokens 512] [--threads N]
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/blas_core.h"
#include "pipeline/hessian_sum.h"

using namespace qshard;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Tensor activations(int64_t tokens, int64_t d) {
  Tensor x = Tensor::zeros(DType::F32, {tokens, d});
  std::mt19937_64 gen(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  float* p = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = nd(gen);
  return x;
}

struct Timed {
  double add_s, total_s;
  Tensor sum;
};

Timed run(const Tensor& x, int64_t d, int64_t window, int threads, Communicator& comm) {
  omp_set_num_threads(threads);
  HessianSum h(d, window);
  const auto t0 = std::chrono::steady_clock::now();
  h.add(x);
  const double add_s = seconds_since(t0);
  h.allreduce(comm);
  return {add_s, seconds_since(t0), h.sum()};
}

double syrk_only(const Tensor& x, int64_t d, int64_t window) {
  std::vector<float> gram(size_t(d * d));
  const int64_t n = x.dim(0);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t t = 0; t < n; t += window)
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, int(d), int(window), 1.0f,
                x.data<float>() + t * d, int(d), 0.0f, gram.data(), int(d));
  return seconds_since(t0);
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  qshard::cpu::reexec_for_blas_core(argv);
  std::vector<int64_t> dims = {4096, 8192};
  int64_t windows = 4, window = 512;
  int threads = omp_get_max_threads();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--dims") dims = parse_list(v);
    else if (a == "--windows") windows = std::stoll(v);
    else if (a == "--window-tokens") window = std::stoll(v);
    else if (a == "--threads") threads = std::stoi(v);
    else fail_input("bench_hessian: unknown option ", a);
  }
  auto comm = make_world_communicator(&argc, &argv);
  std::printf("# %lld windows x %lld tokens; BLAS on its own threads; accumulate = add - SYRK\n",
              (long long)windows, (long long)window);
  std::printf("| in_features | SYRK s | add s, 1 thread | add s, %d threads | accumulate speed-up | "
              "allreduce+unpack s, 1 / %d | same bits |\n|---|---|---|---|---|---|---|\n",
              threads, threads);
  for (int64_t d : dims) {
    const Tensor x = activations(windows * window, d);
    const double syrk = syrk_only(x, d, window);
    const Timed one = run(x, d, window, 1, *comm);
    const Timed many = run(x, d, window, threads, *comm);
    const bool same = std::memcmp(one.sum.raw(), many.sum.raw(), one.sum.nbytes()) == 0;
    std::printf("| %lld | %.3f | %.3f | %.3f | %.2fx | %.3f / %.3f | %s |\n", (long long)d, syrk,
                one.add_s, many.add_s, (one.add_s - syrk) / std::max(1e-9, many.add_s - syrk),
                one.total_s - one.add_s, many.total_s - many.add_s, same ? "yes" : "NO");
  }
  return 0;
}
