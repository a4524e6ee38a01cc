#include "eval/eval.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "dist/partition.h"

namespace qshard {

namespace {

// Per-window results of one rank, flattened for gathering.
struct LocalStats {
  std::vector<double> nll_sum;     // one per window
  std::vector<double> top1_count;  // one per window
  std::vector<double> kld;         // one per predicted token, window-major
};

// Scores one window's log-probs against its tokens (and the reference's log-probs).
void score_window(const float* logp, const float* ref_logp, const int32_t* tokens, int64_t seqlen,
                  int64_t vocab, LocalStats& out) {
  double nll = 0;
  double top1 = 0;
  for (int64_t t = 0; t + 1 < seqlen; ++t) {
    const float* lp = logp + t * vocab;
    nll -= double(lp[tokens[t + 1]]);
    if (!ref_logp) continue;
    const float* lr = ref_logp + t * vocab;
    double kl = 0;
    int64_t arg_m = 0, arg_r = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      kl += double(std::exp(lr[v])) * (double(lr[v]) - double(lp[v]));
      if (lp[v] > lp[arg_m]) arg_m = v;
      if (lr[v] > lr[arg_r]) arg_r = v;
    }
    out.kld.push_back(std::max(kl, 0.0));  // rounding can dip a hair below zero
    top1 += arg_m == arg_r;
  }
  out.nll_sum.push_back(nll);
  out.top1_count.push_back(top1);
}

std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  std::ostringstream os;
  os.precision(10);
  os << x;
  return os.str();
}

}  // namespace

double quantile_sorted(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return std::numeric_limits<double>::quiet_NaN();
  const double pos = q * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - double(lo)) * (sorted[hi] - sorted[lo]);
}

std::string EvalResult::to_json() const {
  std::ostringstream os;
  auto ref = [&](double x) { return has_reference ? json_number(x) : std::string("null"); };
  os << "{\"ppl\": " << json_number(ppl) << ", \"nll_mean\": " << json_number(nll_mean)
     << ", \"tokens\": " << tokens << ", \"windows\": " << windows
     << ", \"kld_mean\": " << ref(kld_mean) << ", \"kld_median\": " << ref(kld_median)
     << ", \"kld_p99\": " << ref(kld_p99) << ", \"kld_max\": " << ref(kld_max)
     << ", \"top1_agree\": " << ref(top1_agree) << ", \"seconds\": " << json_number(seconds)
     << ", \"ranks\": " << ranks << "}";
  return os.str();
}

EvalResult evaluate(CausalLM& model, CausalLM* reference, const std::vector<int32_t>& tokens,
                    const EvalOptions& options, Communicator& comm) {
  const double start = wall_seconds();
  const int64_t S = options.seqlen;
  if (S < 2) fail_input("--seqlen must be at least 2, got ", S);
  int64_t n_windows = int64_t(tokens.size()) / S;
  if (options.max_windows > 0) n_windows = std::min(n_windows, options.max_windows);
  if (n_windows == 0)
    fail_input("the text has ", tokens.size(), " tokens, fewer than one window of --seqlen ", S,
               ": use a longer text or a smaller --seqlen");
  const int64_t V = model.spec().vocab_size;
  if (reference && reference->spec().vocab_size != V)
    fail_input("the reference model's vocabulary (", reference->spec().vocab_size,
               ") differs from the model's (", V, "): KL divergence needs the same vocabulary");

  const Range mine = split_range(n_windows, comm.size(), comm.rank());
  const int64_t per_batch = std::max<int64_t>(1, options.batch_tokens / S);
  Backend& be = model.backend();
  LocalStats local;
  Progress progress("eval", mine.size() * comm.size(), "windows");
  for (int64_t w0 = mine.begin; w0 < mine.end; w0 += per_batch) {
    const int64_t B = std::min(per_batch, mine.end - w0);
    Tensor batch = Tensor::zeros(DType::I32, {B * S});
    std::copy_n(tokens.data() + w0 * S, B * S, batch.data<int32_t>());
    Tensor hidden = model.forward_hidden(batch, B, S);
    Tensor ref_hidden;
    if (reference) ref_hidden = reference->forward_hidden(batch, B, S);
    for (int64_t b = 0; b < B; ++b) {
      // One window's logits at a time: [S, vocab] is 128 MB at Llama 3's vocabulary.
      Tensor lp = model.logits(hidden.rows(b * S, (b + 1) * S));
      be.log_softmax(lp, lp);
      const Tensor lp_host = be.download(lp);
      Tensor lr_host;
      if (reference) {
        Tensor lr = reference->logits(ref_hidden.rows(b * S, (b + 1) * S));
        reference->backend().log_softmax(lr, lr);
        lr_host = reference->backend().download(lr);
      }
      score_window(lp_host.data<float>(), reference ? lr_host.data<float>() : nullptr,
                   batch.data<int32_t>() + b * S, S, V, local);
    }
    progress.update((w0 + B - mine.begin) * comm.size());
  }
  progress.finish();

  // Gather per-window values in window order so sums run in one fixed order whatever
  // the rank count, then share the summary with every rank.
  const std::vector<double> nll = comm.gather(local.nll_sum, 0);
  const std::vector<double> top1 = comm.gather(local.top1_count, 0);
  std::vector<double> kld = comm.gather(local.kld, 0);
  EvalResult r;
  r.windows = n_windows;
  r.tokens = n_windows * (S - 1);
  r.has_reference = reference != nullptr;
  r.ranks = comm.size();
  double summary[6] = {0, 0, 0, 0, 0, 0};
  if (comm.is_root()) {
    double nll_total = 0, top1_total = 0;
    for (double x : nll) nll_total += x;
    for (double x : top1) top1_total += x;
    summary[0] = nll_total / double(r.tokens);
    if (reference) {
      double kld_total = 0;
      for (double x : kld) kld_total += x;
      std::sort(kld.begin(), kld.end());
      summary[1] = kld_total / double(kld.size());
      summary[2] = quantile_sorted(kld, 0.5);
      summary[3] = quantile_sorted(kld, 0.99);
      summary[4] = kld.back();
      summary[5] = top1_total / double(r.tokens);
    }
  }
  comm.broadcast(summary, sizeof summary, 0);
  r.nll_mean = summary[0];
  r.ppl = std::exp(r.nll_mean);
  r.kld_mean = summary[1];
  r.kld_median = summary[2];
  r.kld_p99 = summary[3];
  r.kld_max = summary[4];
  r.top1_agree = summary[5];
  r.seconds = wall_seconds() - start;
  return r;
}

}  // namespace qshard
