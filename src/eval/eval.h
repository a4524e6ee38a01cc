// Perplexity and KL divergence against a reference model, under one protocol so the
// numbers compare across tools (docs/cli.md): tokens = [BOS] + encode(whole text);
// non-overlapping windows of `seqlen`; each window predicts positions 1..seqlen-1.
// Windows are split over ranks; results do not depend on the rank count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "model/decoder.h"

namespace qshard {

struct EvalOptions {
  int64_t seqlen = 256;
  int64_t max_windows = 0;   // 0: every full window
  int64_t batch_tokens = 2048;  // windows per forward = max(1, batch_tokens / seqlen)
};

struct EvalResult {
  int64_t windows = 0;
  int64_t tokens = 0;  // predicted tokens: windows * (seqlen - 1)
  double nll_mean = 0;
  double ppl = 0;
  bool has_reference = false;
  double kld_mean = 0, kld_median = 0, kld_p99 = 0, kld_max = 0;
  double top1_agree = 0;
  double seconds = 0;
  int ranks = 1;

  std::string to_json() const;  // one line; kld keys null without a reference
};

// Value at quantile q of sorted values, interpolating linearly between ranks
// (numpy.percentile's default), so medians and p99s match the PyTorch tooling.
double quantile_sorted(const std::vector<double>& sorted, double q);

// `tokens` is the whole stream, identical on every rank. Returns the same result on
// every rank.
EvalResult evaluate(CausalLM& model, CausalLM* reference, const std::vector<int32_t>& tokens,
                    const EvalOptions& options, Communicator& comm);

}  // namespace qshard
