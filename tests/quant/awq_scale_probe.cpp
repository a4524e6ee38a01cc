// Runs our AWQ scale search (the α grid of pipeline/awq_layer.cpp with the linear-output
// loss) on inputs written by tools/autoawq_reference.py, so that the script test can
// compare it with a re-implementation of AutoAWQ's search. Input: a safetensors file with,
// per case c, "c.x" [tokens, in] and "c.w0", "c.w1", … [out_k, in] (the linears sharing
// the input). Output (stdout): one JSON object {case: {"best": i, "scales": [...],
// "loss": [per grid point, mean squared output error]}}.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "quant/awq.h"
#include "quant/gptq.h"

using namespace qshard;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: awq_scale_probe FILE.safetensors BITS GROUP_SIZE N_GRID\n");
    return 2;
  }
  const SafetensorsFile file = SafetensorsFile::open(argv[1]);
  const QuantFormat fmt = QuantFormat::parse("int" + std::string(argv[2]), std::stoi(argv[3]), /*symmetric=*/false);
  const int n_grid = std::stoi(argv[4]);
  const auto scheme = Scheme::make(fmt);
  const ExportNumerics numerics;  // F32 throughout, as the reference
  std::map<std::string, std::vector<std::string>> cases;
  for (const std::string& n : file.names())
    if (const auto dot = n.find('.'); dot != std::string::npos && n.substr(dot + 1) != "x")
      cases[n.substr(0, dot)].push_back(n);
  nlohmann::json out = nlohmann::json::object();
  for (auto& [name, ws] : cases) {
    std::sort(ws.begin(), ws.end());
    const Tensor x = file.get(name + ".x").to_f32();
    const int64_t T = x.dim(0), d = x.dim(1);
    HessianAccumulator acc(d);
    acc.add(x);
    std::vector<double> x_mean(size_t(d), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < d; ++j) x_mean[size_t(j)] += std::fabs(x.data<float>()[t * d + j]);
    for (double& v : x_mean) v /= double(T);
    std::vector<Tensor> W;
    double numel = 0;  // elements of the compared outputs
    for (const std::string& wn : ws) {
      W.push_back(file.get(wn).to_f32());
      numel += double(T) * double(W.back().dim(0));
    }
    std::vector<double> loss(size_t(n_grid), 0.0);
    std::vector<std::vector<float>> cand(static_cast<size_t>(n_grid));
    for (int i = 0; i < n_grid; ++i) {
      cand[size_t(i)] = awq_scales(x_mean, double(i) / n_grid);
      for (const Tensor& w : W)
        loss[size_t(i)] += output_error(w, awq_fake_quant(w, cand[size_t(i)], *scheme, nullptr, numerics, name),
                                        acc.sum()) / numel;
    }
    const int best = awq_best_grid_point(loss);
    out[name] = {{"best", best}, {"scales", cand[size_t(best)]}, {"loss", loss}};
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
