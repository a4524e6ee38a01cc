#include "pipeline/bpw_plan.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "core/stop.h"
#include "dist/partition.h"
#include "pipeline/gguf_mix.h"
#include "pipeline/hessian_sum.h"
#include "pipeline/layer_owner.h"
#include "quant/awq.h"  // output_error: tr(ΔW H ΔWᵀ)
#include "quant/rtn.h"
#include "quant/scheme.h"

namespace qshard {

namespace {

double ggml_k_bits(int bits) {  // block bytes · 8 / 256 (ggml-common.h)
  switch (bits) {
    case 2: return 84.0 * 8 / 256;   // Q2_K 2.625
    case 3: return 110.0 * 8 / 256;  // Q3_K 3.4375
    case 4: return 144.0 * 8 / 256;  // Q4_K 4.5
    case 5: return 176.0 * 8 / 256;  // Q5_K 5.5
    default: return 210.0 * 8 / 256;  // Q6_K 6.5625
  }
}

class AllInputs final : public LayerObserver {
 public:
  AllInputs(Backend& be, std::map<GroupId, HessianSum>& acc) : be_(be), acc_(acc) {}
  void on_linear_input(int64_t, GroupId g, const Tensor& x) override { acc_.at(g).add(be_.download(x)); }

 private:
  Backend& be_;
  std::map<GroupId, HessianSum>& acc_;
};

// The knapsack's rounded steps can strand budget or miss a trade (one module down a format
// so that another can go up): the best single upgrade or pair exchange that lowers the
// summed error within the exact budget, repeated until none does.
void improve(BpwPlan& plan, double budget, double used) {
  struct Move {
    double gain = 0, extra = 0;
    size_t i = 0, k = 0;
    int to_i = -1, to_k = -1;
  };
  const size_t M = plan.modules.size();
  auto delta = [&](size_t i, int to) {  // (extra bits, error decrease)
    const PlannedModule& m = plan.modules[i];
    return std::pair{(m.bits[size_t(to)] - m.bits[size_t(m.choice)]) * double(m.out * m.in),
                     m.errors[size_t(m.choice)] - m.errors[size_t(to)]};
  };
  for (size_t iter = 0; iter < 16 * M + 16; ++iter) {
    Move best;
    for (size_t i = 0; i < M; ++i)
      for (int a = 0; a < int(plan.modules[i].bits.size()); ++a) {
        const auto [xa, ga] = delta(i, a);
        if (xa <= 0) continue;  // i goes up (more bits)
        if (used + xa <= budget && ga > best.gain) best = {ga, xa, i, i, a, -1};
        for (size_t k = 0; k < M; ++k) {
          if (k == i) continue;
          for (int b = 0; b < int(plan.modules[k].bits.size()); ++b) {
            const auto [xb, gb] = delta(k, b);
            if (xb >= 0 || used + xa + xb > budget) continue;  // k goes down to pay for it
            const double g = ga + gb;
            if (g > best.gain * (1 + 1e-12) + 1e-300) best = {g, xa + xb, i, k, a, b};
          }
        }
      }
    if (best.to_i < 0) return;
    plan.modules[best.i].choice = best.to_i;
    if (best.to_k >= 0) plan.modules[best.k].choice = best.to_k;
    used += best.extra;
  }
}

// How much of a module's output error reaches the model's output: with only that module
// quantized (RTN, candidate `ref`), the mean KL divergence of the logits from the
// unquantized model's on the first `windows` calibration windows, per unit of its output
// error. Every rank runs the same windows; each module is measured on one rank.
class GainProbe {
 public:
  GainProbe(CausalLM& lm, const TensorSource& source, const CalibrationSet& calib, int64_t windows)
      : lm_(lm), be_(lm.backend()), B_(std::min(windows, calib.n_samples)), S_(calib.seqlen) {
    Tensor tokens = Tensor::zeros(DType::I32, {B_ * S_});
    std::copy_n(calib.tokens.data(), B_ * S_, tokens.data<int32_t>());
    norm_ = be_.upload(source.get("model.norm.weight"));
    Tensor h = lm_.embed(tokens);
    for (int64_t l = 0; l < lm_.spec().num_layers; ++l) {
      inputs_.push_back(be_.download(h));
      lm_.layer_forward(l, lm_.load_layer(l), h, B_, S_);
    }
    ref_ = log_probs(h);
  }

  // Mean KL(reference || model) with `w_hat` in place of layer l's `member`.
  double kld(int64_t l, const LinearSlot& slot, const Tensor& w_hat) {
    Tensor h = be_.upload(inputs_[size_t(l)]);
    LayerWeights w = lm_.load_layer(l);
    linear_of(w, slot).weight = be_.upload(w_hat);
    lm_.layer_forward(l, w, h, B_, S_);
    for (int64_t k = l + 1; k < lm_.spec().num_layers; ++k) lm_.layer_forward(k, lm_.load_layer(k), h, B_, S_);
    const Tensor lp = log_probs(h);
    const int64_t rows = lp.dim(0), V = lp.dim(1);
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* p = ref_.data<float>() + r * V;
      const float* q = lp.data<float>() + r * V;
      double kl = 0;
      for (int64_t v = 0; v < V; ++v) kl += std::exp(double(p[v])) * (double(p[v]) - double(q[v]));
      total += std::max(kl, 0.0);
    }
    return total / double(rows);
  }

 private:
  Tensor log_probs(const Tensor& h) {  // host F32 [B·S, vocab]
    Tensor x = be_.zeros(DType::F32, h.shape());
    be_.rmsnorm(h, norm_, float(lm_.spec().rms_norm_eps), x);
    Tensor lp = lm_.logits(x);
    be_.log_softmax(lp, lp);
    return be_.download(lp);
  }

  CausalLM& lm_;
  Backend& be_;
  int64_t B_, S_;
  Tensor norm_, ref_;
  std::vector<Tensor> inputs_;  // host: each layer's unquantized input
};

}  // namespace

std::vector<QuantFormat> default_bpw_formats(bool symmetric, bool ggml) {
  if (ggml)
    return {QuantFormat::parse("q3_k", 0, true), QuantFormat::parse("q4_k", 0, true),
            QuantFormat::parse("q5_k", 0, true), QuantFormat::parse("q6_k", 0, true),
            QuantFormat::parse("q8_0", 0, true)};
  return {QuantFormat::parse("int3", 64, symmetric), QuantFormat::parse("int4", 64, symmetric),
          QuantFormat::parse("int4", 32, symmetric), QuantFormat::parse("int8", 128, symmetric)};
}

std::vector<QuantFormat> parse_bpw_formats(const std::string& list, bool symmetric) {
  std::vector<QuantFormat> out;
  std::stringstream items(list);
  std::string item;
  while (std::getline(items, item, ',')) {
    std::stringstream parts(item);
    std::string name, part;
    std::getline(parts, name, ':');
    int64_t group = 0;
    bool sym = symmetric;
    while (std::getline(parts, part, ':')) {
      if (part == "sym" || part == "asym") {
        sym = part == "sym";
      } else if (part.size() > 1 && part[0] == 'g') {
        try {
          size_t used = 0;
          group = std::stoll(part.substr(1), &used);
          if (used != part.size() - 1) throw std::invalid_argument(part);
        } catch (const std::exception&) {
          fail_input("--bpw-formats '", item, "': '", part, "' is not a group size like g64 or g-1");
        }
      } else {
        fail_input("--bpw-formats '", item, "': '", part, "' is not gGROUP, sym or asym (e.g. int4:g64:asym)");
      }
    }
    if (name.empty()) fail_input("--bpw-formats '", list, "': an empty entry (write NAME[:gGROUP][:sym|:asym],...)");
    try {
      out.push_back(QuantFormat::parse(name, group, sym));
    } catch (const InputError& e) {
      fail_input("--bpw-formats '", item, "': ", e.what());
    }
  }
  if (out.empty()) fail_input("--bpw-formats is empty: list formats such as int3:g64,int4:g64,int8:g128");
  return out;
}

double bits_per_weight(const QuantFormat& f, int64_t in_features) {
  switch (f.family) {
    case FormatFamily::Int:
      return f.bits + (16.0 + (f.has_zero_point() ? f.bits : 0)) / double(f.group_width(in_features));
    case FormatFamily::MXInt:
    case FormatFamily::MXFP4: return f.bits + 8.0 / double(f.group_size);
    case FormatFamily::NVFP4: return 4.0 + 8.0 / 16;
    case FormatFamily::GgmlBlock: return f.bits + (f.stores_zeros() ? 32.0 : 16.0) / 32;
    case FormatFamily::GgmlK: return ggml_k_bits(f.bits);
    case FormatFamily::GgmlIQ4NL: return 4.5;   // block_iq4_nl: 18 bytes per 32
    case FormatFamily::GgmlIQ4XS: return 4.25;  // block_iq4_xs: 136 bytes per 256
  }
  return f.bits;
}

const QuantFormat& BpwPlan::format_of(const PlannedModule& m, size_t j) const {
  return m.stored.empty() ? formats[j] : m.stored[j];
}

double BpwPlan::bits() const {
  double b = 0, n = 0;
  for (const auto& m : modules) {
    b += m.bits[size_t(m.choice)] * double(m.out * m.in);
    n += double(m.out * m.in);
  }
  return n > 0 ? b / n : 0;
}

double BpwPlan::min_bits() const {
  double b = 0, n = 0;
  for (const auto& m : modules) {
    b += *std::min_element(m.bits.begin(), m.bits.end()) * double(m.out * m.in);
    n += double(m.out * m.in);
  }
  return n > 0 ? b / n : 0;
}

double BpwPlan::predicted_error() const {
  double e = 0;
  for (const auto& m : modules) e += m.errors.empty() ? 0 : m.errors[size_t(m.choice)];
  return e;
}

const QuantFormat& BpwPlan::main_format() const {
  // By stored format: a fallback counts as the type the file holds.
  std::map<std::string, std::pair<double, const QuantFormat*>> weights;
  for (const auto& m : modules) {
    auto& w = weights[chosen(m).describe()];
    w.first += double(m.out * m.in);
    w.second = &chosen(m);
  }
  const QuantFormat* best = &formats.front();
  double most = -1;
  for (const auto& f : formats)  // ties: the earlier candidate in the list
    for (const auto& [name, w] : weights)
      if (name == f.describe() && w.first > most) most = w.first, best = w.second;
  for (const auto& [name, w] : weights)  // a fallback holding the most
    if (w.first > most) most = w.first, best = w.second;
  return *best;
}

void BpwPlan::apply(Recipe& recipe) const {
  for (const auto& m : modules) recipe.append_exact(m.module, chosen(m));
}

nlohmann::json BpwPlan::to_json() const {
  nlohmann::json mods = nlohmann::json::array();
  for (const auto& m : modules)
    mods.push_back({{"module", m.module},
                    {"format", chosen(m).describe()},
                    {"bits", m.bits[size_t(m.choice)]},
                    {"predicted_error", m.errors.empty() ? 0.0 : m.errors[size_t(m.choice)]}});
  nlohmann::json cands = nlohmann::json::array();
  for (const auto& f : formats) cands.push_back(f.describe());
  return {{"target_bpw", target}, {"bits_per_weight", bits()}, {"predicted_error", predicted_error()},
          {"error_kind", kld_scaled ? "kld" : "output_error"},
          {"candidates", cands}, {"modules", mods}};
}

void BpwPlan::print_table(std::FILE* out) const {
  std::fprintf(out, "# --target-bpw %.4g: %.4f bits per weight planned; predicted %s %.6g\n", target, bits(),
               kld_scaled ? "KLD (sum over modules, RTN)" : "error (sum of tr(dW H dW^T), RTN)", predicted_error());
  std::fprintf(out, "%-40s %-16s %8s %14s\n", "module", "format", "bits", "pred_error");
  for (const auto& m : modules)
    std::fprintf(out, "%-40s %-16s %8.4f %14.6g\n", m.module.c_str(), chosen(m).describe().c_str(),
                 m.bits[size_t(m.choice)], m.errors.empty() ? 0.0 : m.errors[size_t(m.choice)]);
}

BpwPlan plan_modules(const ModelSpec& spec, const Recipe& recipe, const std::vector<QuantFormat>& formats,
                     double target) {
  BpwPlan plan;
  plan.target = target;
  plan.formats = formats;
  for (int64_t l = 0; l < spec.num_layers; ++l)
    for (const LinearSlot& s : layer_linears(spec)) {
      const std::string module = spec.layer_prefix(l) + s.name;
      if (!recipe.format_for(module)) continue;
      const int64_t out = dim_size(spec, s.out), in = dim_size(spec, s.in);
      PlannedModule m{module, out, in, {}, {}, 0, {}};
      bool fell_back = false;
      for (const auto& f : formats) {
        const std::optional<QuantFormat> stored = f.is_ggml() ? gguf_fallback(f, in) : f;
        if (!stored || (stored->group_size > 0 && in % stored->group_size != 0))
          fail_input("--bpw-formats: ", f.describe(), " does not divide ", module, ".weight (", in,
                     " input features): drop it from the list or give a group size that divides ", in);
        fell_back = fell_back || stored->describe() != f.describe();
        m.stored.push_back(*stored);
        m.bits.push_back(bits_per_weight(*stored, in));
      }
      if (!fell_back) m.stored.clear();
      plan.modules.push_back(std::move(m));
    }
  if (plan.modules.empty()) fail_input("--target-bpw: the recipe leaves no Linear quantized, nothing to plan");
  const double floor = plan.min_bits();
  const auto& b0 = plan.modules.front().bits;
  const QuantFormat& cheapest = formats[size_t(std::min_element(b0.begin(), b0.end()) - b0.begin())];
  if (!(target >= floor - 1e-12))
    fail_input("--target-bpw ", target, " is below ", floor, " bits per weight, what the cheapest of --bpw-formats (",
               cheapest.describe(), ", ...) costs with its scales and zeros: raise --target-bpw or add a "
               "cheaper format");
  return plan;
}

void choose_formats(BpwPlan& plan) {
  // A multiple-choice knapsack, solved exactly by dynamic programming over the budget in
  // kSteps equal steps, each module's bits rounded up to whole steps (so the plan stays
  // within the budget); improve() then spends what the rounding left over.
  constexpr int64_t kSteps = 20000;
  const size_t M = plan.modules.size();
  double budget = 0;
  for (const auto& m : plan.modules) budget += plan.target * double(m.out * m.in);
  const double step = budget / double(kSteps);
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> best(kSteps + 1, 0.0), next(kSteps + 1);
  std::vector<int8_t> pick(M * size_t(kSteps + 1), -1);  // module i's format at budget c
  for (size_t i = 0; i < M; ++i) {
    const PlannedModule& m = plan.modules[i];
    std::vector<int64_t> cost(m.bits.size());
    for (size_t j = 0; j < cost.size(); ++j)
      cost[j] = int64_t(std::ceil(m.bits[j] * double(m.out * m.in) / step * (1 - 1e-12)));
    for (int64_t c = 0; c <= kSteps; ++c) {
      next[size_t(c)] = kInf;
      for (size_t j = 0; j < cost.size(); ++j) {  // strict <: ties go to the earlier format
        if (cost[j] > c) continue;
        const double e = best[size_t(c - cost[j])] + m.errors[j];
        if (e < next[size_t(c)]) {
          next[size_t(c)] = e;
          pick[i * size_t(kSteps + 1) + size_t(c)] = int8_t(j);
        }
      }
    }
    best.swap(next);
  }
  double used = 0;
  int64_t c = kSteps;
  for (size_t i = M; i-- > 0;) {
    PlannedModule& m = plan.modules[i];
    int j = pick[i * size_t(kSteps + 1) + size_t(c)];
    if (j < 0) j = int(std::min_element(m.bits.begin(), m.bits.end()) - m.bits.begin());  // rounding
    m.choice = j;
    c -= std::min<int64_t>(c, int64_t(std::ceil(m.bits[size_t(j)] * double(m.out * m.in) / step * (1 - 1e-12))));
    used += m.bits[size_t(j)] * double(m.out * m.in);
  }
  improve(plan, budget * (1 + 1e-12), used);
}

void measure_and_choose(BpwPlan& plan, CausalLM& lm, const TensorSource& source, const CalibrationSet& calib,
                        int64_t batch_tokens, int64_t gain_windows, Communicator& comm) {
  const ModelSpec& spec = lm.spec();
  Backend& be = lm.backend();
  const Range mine = split_range(calib.n_samples, comm.size(), comm.rank());
  const int64_t S = calib.seqlen;
  const int64_t per_batch = std::max<int64_t>(1, batch_tokens / S);
  Tensor tokens = Tensor::zeros(DType::I32, {mine.size() * S});
  std::copy_n(calib.tokens.data() + mine.begin * S, mine.size() * S, tokens.data<int32_t>());
  Tensor h = lm.embed(tokens);

  std::map<std::string, size_t> index;
  for (size_t i = 0; i < plan.modules.size(); ++i) index[plan.modules[i].module] = i;
  const size_t nf = plan.formats.size();
  std::vector<double> errors(plan.modules.size() * nf, 0.0);
  std::vector<double> gains(plan.modules.size(), 0.0);
  // The gains' reference candidate: per module the one nearest the budget (the plan's
  // own regime; a module's bits differ between candidates' fallbacks and per channel).
  const auto ref_of = [&](const PlannedModule& m) {
    size_t ref = 0;
    for (size_t j = 0; j < nf; ++j)
      if (std::abs(m.bits[j] - plan.target) < std::abs(m.bits[ref] - plan.target)) ref = j;
    return ref;
  };
  std::unique_ptr<GainProbe> probe;
  if (gain_windows > 0) probe = std::make_unique<GainProbe>(lm, source, calib, gain_windows);
  std::map<std::string, std::unique_ptr<Scheme>> schemes;  // by stored format
  for (const auto& m : plan.modules)
    for (size_t j = 0; j < nf; ++j) {
      const QuantFormat& f = plan.format_of(m, j);
      if (!schemes.count(f.describe())) schemes[f.describe()] = Scheme::make(f);
    }

  const LayerOwnership owners(spec.num_layers, comm.size());
  std::vector<std::string> prefixes;
  for (int64_t l = 0; l < spec.num_layers; ++l) prefixes.push_back(spec.layer_prefix(l));
  LayerFetcher fetcher(source, prefixes, owners, comm);
  fetcher.prefetch(0);
  Progress progress("bpw plan", spec.num_layers, "layers");
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    // A safe point as the pipeline's (SIGTERM / SIGINT): every rank, the same place.
    int64_t sig = stop_signal();
    comm.allreduce_max(&sig, 1);
    if (sig) throw Stopped(int(sig), "stopped at a safe point");
    const std::shared_ptr<const LayerTensors> src = fetcher.fetch(l);
    fetcher.prefetch(l + 1);
    const LayerWeights w = lm.load_layer(l, *src);
    std::map<GroupId, HessianSum> acc;
    for (const GroupSlot& g : layer_groups(spec)) acc.emplace(g.id(), HessianSum(group_in_features(spec, g), S));
    AllInputs observer(be, acc);
    // The unquantized layer: h moves on to its outputs as it goes.
    for (int64_t w0 = 0; w0 < mine.size(); w0 += per_batch) {
      const int64_t B = std::min(per_batch, mine.size() - w0);
      Tensor rows = h.rows(w0 * S, (w0 + B) * S);
      lm.layer_forward(l, w, rows, B, S, &observer);
    }
    for (auto& [g, a] : acc) a.allreduce(comm);
    for (const LinearSlot& s : layer_linears(spec)) {
      const std::string module = spec.layer_prefix(l) + s.name;
      const auto it = index.find(module);
      if (it == index.end() || int64_t(it->second) % comm.size() != comm.rank()) continue;
      const Tensor weight = src->get(module + ".weight").to_f32();
      const PlannedModule& pm = plan.modules[it->second];
      const size_t ref = ref_of(pm);
      std::map<std::string, double> done;  // a fallback can repeat another candidate
      for (size_t j = 0; j < nf; ++j) {
        const std::string key = plan.format_of(pm, j).describe();
        if (done.count(key) && !(probe && j == ref)) {
          errors[it->second * nf + j] = done[key];
          continue;
        }
        const QuantizedLinear q = rtn_quantize(weight, *schemes.at(key), ClipSearch{}, module + ".weight");
        const Tensor w_hat = q.dequantize();
        errors[it->second * nf + j] = done[key] = output_error(weight, w_hat, acc.at(GroupId(s.group, s.expert)).sum());
        if (probe && j == ref) {
          const double e = errors[it->second * nf + j];
          gains[it->second] = e > 0 ? probe->kld(l, s, w_hat) / e : 0.0;
        }
      }
    }
    progress.update(l + 1);
  }
  progress.finish();
  // Each module's errors come from one rank, zeros from the others: the sum is exact.
  comm.allreduce_sum(errors.data(), int64_t(errors.size()));
  if (probe) comm.allreduce_sum(gains.data(), int64_t(gains.size()));
  // A NaN or infinite error would make the knapsack pick nonsense silently: stop instead.
  for (size_t i = 0; i < plan.modules.size(); ++i)
    for (size_t j = 0; j < nf; ++j)
      if (!std::isfinite(errors[i * nf + j]) || (probe && !std::isfinite(gains[i])))
        fail("--target-bpw: the measured error of ", plan.modules[i].module, " as ",
             plan.format_of(plan.modules[i], j).describe(), " is ", errors[i * nf + j], " (gain ",
             probe ? gains[i] : 1.0, "); a bug in the planning pass: please report it with the command");
  for (size_t i = 0; i < plan.modules.size(); ++i) {
    plan.modules[i].errors.assign(errors.begin() + int64_t(i * nf), errors.begin() + int64_t((i + 1) * nf));
    if (probe)  // predicted KLD: the output errors scaled by what reaches the logits
      for (double& e : plan.modules[i].errors) e *= gains[i];
  }
  plan.kld_scaled = probe != nullptr;
  choose_formats(plan);
}

}  // namespace qshard
