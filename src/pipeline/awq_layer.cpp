// Per-layer AWQ family. Order inside a layer (AutoAWQ's): statistics of the FP layer →
// scale search of every scaling group on the original weights → fold all scales →
// range fits on the scaled weights → quantize. Block losses (attention and MLP output)
// are summed over this rank's tokens and all-reduced; single-linear losses come from
// the all-reduced Gram matrices, so every rank takes the same decisions.
#include "pipeline/awq_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/log.h"
#include "quant/gptq.h"
#include "quant/heuristic_round.h"
#include "quant/kquant.h"

namespace qshard {

MethodPlan parse_method(const std::string& method) {
  MethodPlan p;
  std::string first = method, second;
  if (const auto plus = method.find('+'); plus != std::string::npos) {
    first = method.substr(0, plus);
    second = method.substr(plus + 1);
  }
  auto scaling_of = [](const std::string& m) -> std::optional<ScalingMethod> {
    if (m == "awq") return ScalingMethod::Awq;
    if (m == "awq-joint") return ScalingMethod::AwqJoint;
    if (m == "awq-dh") return ScalingMethod::AwqDh;
    if (m == "smoothquant") return ScalingMethod::SmoothQuant;
    return std::nullopt;
  };
  const char* known = "gptq, rtn, awq, awq-joint, awq-dh, smoothquant, awq+gptq, awq-joint+gptq, smoothquant+gptq";
  if (second.empty()) {
    if (method == "gptq") p.gptq = true;
    else if (method == "rtn") {}
    else if (auto s = scaling_of(method)) p.scaling = *s;
    else fail_input("--method ", method, " is not one of ", known);
    return p;
  }
  if ((first == "gptq" || first == "rtn") && scaling_of(second))
    fail_input("--method ", method, ": ", second, " must come before ", first, " (use ", second, "+", first,
               "): channel scales change the weights ", first, " has already rounded, so scaling after it "
               "would undo its rounding");
  const auto s = scaling_of(first);
  if (!s || second != "gptq" || *s == ScalingMethod::AwqDh)
    fail_input("--method ", method, " is not one of ", known);
  p.scaling = *s;
  p.gptq = true;
  return p;
}

namespace {

// Per-channel statistics and the Gram matrix of one linear group's input.
struct InputStats {
  std::vector<double> abs_sum, sum;
  std::vector<float> abs_max;
  HessianAccumulator hessian;
  explicit InputStats(int64_t d)
      : abs_sum(size_t(d), 0.0), sum(size_t(d), 0.0), abs_max(size_t(d), 0.0f), hessian(d) {}
  void add(const Tensor& x) {
    const int64_t d = x.dim(1), n = x.dim(0);
    const float* p = x.data<float>();
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 0; j < d; ++j) {
        const float v = p[t * d + j];
        abs_sum[size_t(j)] += std::fabs(v);
        sum[size_t(j)] += v;
        abs_max[size_t(j)] = std::max(abs_max[size_t(j)], std::fabs(v));
      }
    hessian.add(x);
  }
};

// Statistics of every group's input (by its index in layer_groups), the dense MLP's input
// per batch, and the tokens routed to each expert.
class CaptureObserver final : public LayerObserver {
 public:
  CaptureObserver(Backend& be, const std::map<GroupId, size_t>& index, std::vector<InputStats>& stats,
                  std::vector<Tensor>& mlp_inputs, std::vector<double>& routed)
      : be_(be), index_(index), stats_(stats), mlp_inputs_(mlp_inputs), routed_(routed) {}
  void on_linear_input(int64_t, GroupId g, const Tensor& x) override {
    const Tensor host = be_.download(x);
    stats_[index_.at(g)].add(host);
    if (g == GroupId(LinearGroup::GateUp)) mlp_inputs_.push_back(be_.upload(host));
  }
  bool on_moe_input(int64_t, const Tensor&, const Routing& r) override {
    for (size_t e = 0; e < r.rows.size(); ++e) routed_[e] += double(r.rows[e].size());
    return false;  // the experts run: their inputs are this observer's statistics
  }

 private:
  Backend& be_;
  const std::map<GroupId, size_t>& index_;
  std::vector<InputStats>& stats_;
  std::vector<Tensor>& mlp_inputs_;
  std::vector<double>& routed_;
};

// Keeps the input of one group and stops the forward there.
class StopObserver final : public LayerObserver {
 public:
  explicit StopObserver(LinearGroup g) : g_(g) {}
  void on_linear_input(int64_t, GroupId g, const Tensor& x) override {
    if (g == GroupId(g_)) captured = x;
  }
  bool stop_after(GroupId g) const override { return g == GroupId(g_); }
  Tensor captured;

 private:
  LinearGroup g_;
};

// Non-negative floats compare like their bit patterns: a max all-reduce over int64.
void allreduce_max_nonneg(std::vector<float>& v, Communicator& comm) {
  if (comm.size() == 1) return;
  std::vector<int64_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t b;
    std::memcpy(&b, &v[i], 4);
    bits[i] = int64_t(b);
  }
  comm.allreduce_max(bits.data(), int64_t(bits.size()));
  for (size_t i = 0; i < v.size(); ++i) {
    const uint32_t b = uint32_t(bits[i]);
    std::memcpy(&v[i], &b, 4);
  }
}

double sum_sq_diff(const Tensor& a, const Tensor& b) {
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = double(x[i]) - double(y[i]);
    s += d * d;
  }
  return s;
}

// A scaling pair (model/architecture.h) and the statistics its scale is searched on.
struct Mapping : ScalingPair {
  size_t input;       // index into the scaler's statistics: the input the balance Linears share
  LinearGroup kind;   // the balance Linears' group kind
};

// K-quants take no clamp ranges (their scales are fitted per 256-element super-block):
// llama.cpp's imatrix-path fit of W·diag(s) with importance diag(H)_j / s_j², the squared
// sums of the inputs that weight reads (kquant.h).
QuantizedLinear kquant_fit(const Tensor& ws, const Tensor& h, const std::vector<float>& s, const QuantFormat& f,
                           const std::string& name) {
  const int64_t d = h.dim(0);
  std::vector<float> importance(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) {
    const float sj = s.empty() ? 1.0f : s[size_t(j)];
    importance[size_t(j)] = std::max(0.0f, h.data<float>()[j * d + j]) / (sj * sj);
  }
  return kquant_rtn(ws, f, name, importance);
}

const Tensor* bias_of(const LinearWeights& lw) { return lw.bias.defined() ? &lw.bias : nullptr; }

// One layer's AWQ-family / SmoothQuant pass, in the steps scale_layer names. Statistics
// are kept per group of layer_groups (an MoE layer: per expert, from its routed tokens),
// plus, for an MoE layer, the normed MLP input over every token (the shared scale's).
class LayerScaler {
 public:
  LayerScaler(CausalLM& lm, int64_t layer, LayerWeights& w, const Tensor& h, const LayerCalibration& cal,
              const Recipe& recipe, const MethodPlan& plan, const ScalingOptions& opt,
              const ExportNumerics& numerics, Communicator& comm);
  ScaledLayer run() {
    collect_statistics();
    lap("statistics");
    const std::vector<Mapping> maps = mappings();
    std::vector<std::vector<float>> scale_of;
    for (const Mapping& m : maps) scale_of.push_back(search(m));
    fold(maps, scale_of);
    if (plan_.gptq && plan_.scaling != ScalingMethod::AwqJoint) return std::move(out_);
    for (size_t i = 0; i < slots_.size(); ++i) quantize_scaled(i);
    lap("ranges and quantization");
    return std::move(out_);
  }

 private:
  using Hessians = std::map<size_t, Tensor>;  // per group: awq-joint's damped scaled Hessian
  void collect_statistics();                // 1. the FP layer's input statistics (and output)
  void reduce_statistics(std::vector<double>& routed);
  void merge_expert_inputs();
  std::vector<Mapping> mappings() const;    // 2. the scaling groups
  std::vector<float> search(const Mapping& m);  // a group's scale; empty: left unscaled
  std::vector<float> smoothquant_scale(const Mapping& m);
  Hessians joint_hessians(const Mapping& m, const std::vector<float>& s) const;
  double grid_loss(const Mapping& m, const std::vector<float>& s, const Hessians& hs);
  std::vector<float> effective(const Mapping& m, std::vector<float> s);
  Tensor fake_quant(size_t slot, const std::vector<float>& s, const Hessians& hs);
  // 3. every scale folded (all were searched on the original weights, as AutoAWQ does)
  void fold(const std::vector<Mapping>& maps, const std::vector<std::vector<float>>& scale_of);
  void fold_into_dense(LinearWeights& lw, const std::vector<float>& s);
  void quantize_scaled(size_t i);           // 4. ranges and quantization of the scaled weights
  QuantizedLinear quantize_ranged_slot(size_t i, const Tensor& H);
  std::vector<double> mean_abs(size_t g) const {
    std::vector<double> m(stats_[g].abs_sum);
    for (double& v : m) v = tokens_of_[g] > 0 ? v / tokens_of_[g] : 0.0;
    return m;
  }
  // An expert that too few calibration tokens reach: its up->down pair is not scaled and
  // its Linears are quantized by RTN (as --moe-starved rtn, the default, does under GPTQ).
  bool starved(size_t g) const {
    const int e = groups_[g].expert;
    return e != kNoExpert && e != kSharedExpert && tokens_of_[g] < std::max(1.0, opt_.expert_min_tokens);
  }
  float damp(size_t g) const { return joint_damp(opt_.joint, in_dims_[g], tokens_of_[g]); }
  static int norm_index(Tensor LayerWeights::*n) { return n == &LayerWeights::input_norm ? 0 : 1; }
  void lap(const std::string& what) {
    const double t = wall_seconds();
    log_debug("layer ", layer_, " ", what, ": ", t - t_mark_, " s");
    t_mark_ = t;
  }
  // The block outputs --awq-loss block compares, per calibration batch.
  template <class F>
  void for_batches(F&& f) const {
    int64_t b = 0;
    for (int64_t w0 = 0; w0 < cal_.windows; w0 += cal_.per_batch, ++b)
      f(b, w0, std::min(cal_.per_batch, cal_.windows - w0));
  }
  Tensor attention_out(const LayerWeights& lw, int64_t w0, int64_t B);
  Tensor mlp_out(const LayerWeights& lw, int64_t b);
  void collect_moe_inputs();
  double block_loss(const Mapping& m, const LayerWeights& lw);

  CausalLM& lm_;
  int64_t layer_;
  LayerWeights& w_;
  const Tensor& h_;
  const LayerCalibration& cal_;
  const MethodPlan& plan_;
  const ScalingOptions& opt_;
  const ExportNumerics& numerics_;
  Communicator& comm_;
  Backend& be_;
  ScaledLayer out_;
  std::vector<LinearSlot> slots_;
  std::vector<GroupSlot> groups_;
  std::map<GroupId, size_t> group_index_;
  std::vector<size_t> slot_group_;  // per slot: its group's index
  std::optional<size_t> moe_input_;  // MoE: the statistics index of the normed MLP input
  std::vector<std::optional<QuantFormat>> formats_;
  std::vector<Tensor> W_;  // host F32, updated by folding
  std::vector<std::string> modules_;
  std::vector<int64_t> in_dims_;     // per statistics index
  std::vector<InputStats> stats_;
  std::vector<double> tokens_of_;   // per statistics index, all ranks: an expert's routed tokens
  std::vector<Tensor> mlp_inputs_;         // per batch: the MLP's (gate/up's, an MoE block's) input
  std::vector<Tensor> attn_ref_, mlp_ref_;  // per batch: the FP blocks' outputs (--awq-loss block)
  double tokens_ = 0;  // all ranks
  std::vector<std::vector<float>> norm_host_;  // input_layernorm, post_attention_layernorm
  std::vector<Tensor> Hs_;                     // per group, in scaled coordinates
  std::vector<std::vector<float>> mean_s_;     // per group: mean input / scale
  double t_mark_ = wall_seconds();
};

LayerScaler::LayerScaler(CausalLM& lm, int64_t layer, LayerWeights& w, const Tensor& h, const LayerCalibration& cal,
                         const Recipe& recipe, const MethodPlan& plan, const ScalingOptions& opt,
                         const ExportNumerics& numerics, Communicator& comm)
    : lm_(lm), layer_(layer), w_(w), h_(h), cal_(cal), plan_(plan), opt_(opt), numerics_(numerics), comm_(comm),
      be_(lm.backend()), slots_(layer_linears(lm.spec())), groups_(layer_groups(lm.spec())) {
  for (size_t g = 0; g < groups_.size(); ++g) {
    group_index_.emplace(groups_[g].id(), g);
    slot_group_.insert(slot_group_.end(), groups_[g].linears.size(), g);
    in_dims_.push_back(group_in_features(lm.spec(), groups_[g]));
  }
  if (lm.arch().is_moe()) {
    moe_input_ = in_dims_.size();
    in_dims_.push_back(lm.spec().hidden_size);
  }
  // Formats and host copies of the weights.
  for (const LinearSlot& s : slots_) {
    modules_.push_back(lm.layer_tensor(layer, s.name));
    formats_.push_back(recipe.format_for(modules_.back()));
    W_.push_back(be_.download(linear_of(w, s).weight));
  }
}

void LayerScaler::collect_statistics() {
  const int64_t S = cal_.seqlen;
  for (int64_t d : in_dims_) stats_.emplace_back(d);
  if (opt_.propagate_fp) out_.fp_output = be_.zeros(DType::F32, {h_.dim(0), h_.dim(1)});
  std::vector<double> routed(size_t(lm_.spec().num_experts), 0.0);
  {
    CaptureObserver cap(be_, group_index_, stats_, mlp_inputs_, routed);
    for_batches([&](int64_t, int64_t w0, int64_t B) {
      Tensor scratch = be_.upload(be_.download(h_.rows(w0 * S, (w0 + B) * S)));
      lm_.layer_forward(layer_, w_, scratch, B, S, &cap);
      if (opt_.propagate_fp) {
        Tensor dst = out_.fp_output.rows(w0 * S, (w0 + B) * S);
        be_.add_inplace(dst, scratch);
      }
    });
  }
  reduce_statistics(routed);
  if (moe_input_) merge_expert_inputs();
  auto host = [&](const Tensor& n) {
    const Tensor t = be_.download(n);
    return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
  };
  norm_host_ = {host(w_.input_norm), host(w_.post_attention_norm)};
}

// Sums over ranks; an expert's token count is what the router sent it.
void LayerScaler::reduce_statistics(std::vector<double>& routed) {
  double tokens = double(cal_.windows * cal_.seqlen);
  comm_.allreduce_sum(&tokens, 1);
  tokens_ = tokens;
  for (InputStats& st : stats_) {
    comm_.allreduce_sum(st.abs_sum.data(), int64_t(st.abs_sum.size()));
    comm_.allreduce_sum(st.sum.data(), int64_t(st.sum.size()));
    allreduce_max_nonneg(st.abs_max, comm_);
    if (comm_.size() > 1) comm_.allreduce_sum(st.hessian.sum().data<float>(), st.hessian.sum().numel());
  }
  if (!routed.empty()) comm_.allreduce_sum(routed.data(), int64_t(routed.size()));
  for (size_t e = 0; e < routed.size(); ++e) out_.routed[int(e)] = routed[e];
  tokens_of_.assign(in_dims_.size(), tokens_);
  for (size_t g = 0; g < groups_.size(); ++g) {
    const int e = groups_[g].expert;
    if (e != kNoExpert && e != kSharedExpert) tokens_of_[g] = routed[size_t(e)];
  }
}

// The MoE block's input over every token, from the routed experts' gate/up inputs: the
// capture pass shows each token to exactly top-k of them (zero rows elsewhere), so sums
// divide by k and maxima carry over. (The shared scale's search reads it; each Linear's
// loss still reads its own expert's Gram matrix.)
void LayerScaler::merge_expert_inputs() {
  InputStats& all = stats_[*moe_input_];
  const double k = double(lm_.spec().experts_per_token);
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (groups_[g].group != LinearGroup::GateUp || groups_[g].expert == kSharedExpert) continue;
    const InputStats& st = stats_[g];
    for (size_t j = 0; j < all.sum.size(); ++j) {
      all.abs_sum[j] += st.abs_sum[j] / k;
      all.sum[j] += st.sum[j] / k;
      all.abs_max[j] = std::max(all.abs_max[j], st.abs_max[j]);
    }
  }
}

// The table's scaling pairs (model/architecture.h), each with the input its scale is
// searched on: the balance Linears' group, or an MoE layer's whole normed MLP input.
std::vector<Mapping> LayerScaler::mappings() const {
  std::vector<Mapping> maps;
  for (ScalingPair& p : scaling_pairs(lm_.spec())) {
    if (plan_.scaling == ScalingMethod::SmoothQuant && !p.norm) continue;  // the reference smooths norm inputs only
    const size_t first = p.balance.front();
    const bool moe_mlp = moe_input_ && p.norm == &LayerWeights::post_attention_norm;
    maps.push_back({std::move(p), moe_mlp ? *moe_input_ : slot_group_[first], slots_[first].group});
  }
  return maps;
}

// Effective scale after folding (norm weights rounded to their stored dtype).
std::vector<float> LayerScaler::effective(const Mapping& m, std::vector<float> s) {
  if (!m.norm) return s;
  std::vector<float> g = norm_host_[size_t(norm_index(m.norm))];
  return fold_into_norm(g, s, numerics_.norm_dtype);
}

// Ŵ = Q(W·s)/s in original coordinates, for the slot's format; joint: J1 ranges.
Tensor LayerScaler::fake_quant(size_t slot, const std::vector<float>& s, const Hessians& hs) {
  if (formats_[slot]->uses_kquant_fit()) {
    Tensor ws = W_[slot].to_f32();
    scale_columns(ws, s);
    const Tensor& H = stats_[slot_group_[slot]].hessian.sum();
    Tensor wh = dequantize_exported(kquant_fit(ws, H, s, *formats_[slot], modules_[slot]), numerics_);
    unscale_columns(wh, s);
    return wh;
  }
  const auto scheme = Scheme::make(*formats_[slot]);
  GroupRanges ranges;
  if (plan_.scaling == ScalingMethod::AwqJoint) {
    // Inside the exponent grid a coarser range grid (twice the step) keeps the search
    // cheap; the final fit at the chosen exponent uses the full grid and descents.
    Tensor ws = W_[slot].to_f32();
    scale_columns(ws, s);
    JointOptions coarse = opt_.joint;
    coarse.range_step *= 2;
    ranges = joint_block_ranges(ws, hs.at(slot_group_[slot]), *scheme, numerics_, coarse);
  }
  return awq_fake_quant(W_[slot], s, *scheme, &ranges, numerics_, modules_[slot]);
}

std::vector<float> LayerScaler::smoothquant_scale(const Mapping& m) {
  const int64_t d = in_dims_[m.input];
  std::vector<float> wmax(size_t(d), 0.0f);
  for (size_t b : m.balance) {
    const auto cm = column_absmax(W_[b]);
    for (int64_t j = 0; j < d; ++j) wmax[size_t(j)] = std::max(wmax[size_t(j)], cm[size_t(j)]);
  }
  std::vector<double> amax(stats_[m.input].abs_max.begin(), stats_[m.input].abs_max.end());
  return effective(m, smoothquant_scales(amax, wmax, opt_.smooth_alpha));
}

// awq-joint: each balance group's Hessian in the coordinates of scale s, damped.
LayerScaler::Hessians LayerScaler::joint_hessians(const Mapping& m, const std::vector<float>& s) const {
  Hessians hs;
  if (plan_.scaling != ScalingMethod::AwqJoint) return hs;
  for (size_t b : m.balance) {
    const size_t g = slot_group_[b];
    if (!hs.count(g)) hs[g] = damped_hessian(scale_hessian(stats_[g].hessian.sum(), s), damp(g));
  }
  return hs;
}

// Attention output (after o_proj) of the batch at window w0 with `lw` as the layer's weights.
Tensor LayerScaler::attention_out(const LayerWeights& lw, int64_t w0, int64_t B) {
  const int64_t S = cal_.seqlen;
  Tensor rows = h_.rows(w0 * S, (w0 + B) * S);  // not written: the forward stops before o_proj
  StopObserver stop(LinearGroup::O);
  lm_.layer_forward(layer_, lw, rows, B, S, &stop);
  Tensor y = be_.zeros(DType::F32, {B * S, lm_.spec().hidden_size});
  be_.linear(stop.captured, lw.o.weight, bias_of(lw.o), y);
  return be_.download(y);
}

// MLP output (after down_proj; an MoE block's, routed and weighted) of batch b with `lw`
// as the layer's weights.
Tensor LayerScaler::mlp_out(const LayerWeights& lw, int64_t b) {
  const Tensor& x = mlp_inputs_[size_t(b)];
  const int64_t T = x.dim(0), I = lm_.spec().intermediate_size;
  Tensor y = be_.zeros(DType::F32, {T, lm_.spec().hidden_size});
  if (moe_input_) {
    lm_.add_moe_output(layer_, lw, GroupInput{x, Tensor()}, y, nullptr);
    return be_.download(y);
  }
  Tensor g = be_.zeros(DType::F32, {T, I}), u = be_.zeros(DType::F32, {T, I});
  be_.linear(x, lw.gate.weight, bias_of(lw.gate), g);
  be_.linear(x, lw.up.weight, bias_of(lw.up), u);
  be_.silu_mul(g, u, g);
  be_.linear(g, lw.down.weight, bias_of(lw.down), y);
  return be_.download(y);
}

// An MoE layer's normed MLP input per batch, for the block loss: the capture pass's
// observer sees only each expert's routed rows, so the attention half runs again.
void LayerScaler::collect_moe_inputs() {
  const int64_t S = cal_.seqlen;
  for_batches([&](int64_t, int64_t w0, int64_t B) {
    Tensor h = be_.upload(be_.download(h_.rows(w0 * S, (w0 + B) * S)));
    const GroupInput a = lm_.attention_input(w_, h);
    lm_.add_attention_output(w_, lm_.attention_heads(w_, a, B, S), h);
    mlp_inputs_.push_back(lm_.mlp_input(w_, h).x);
  });
}

// Σ over this rank's batches of the squared difference between the block's output with
// `lw` and with the FP layer (computed once per block).
double LayerScaler::block_loss(const Mapping& m, const LayerWeights& lw) {
  double loss = 0;
  if (m.kind == LinearGroup::QKV) {
    if (attn_ref_.empty())
      for_batches([&](int64_t, int64_t w0, int64_t B) { attn_ref_.push_back(attention_out(w_, w0, B)); });
    for_batches([&](int64_t b, int64_t w0, int64_t B) {
      loss += sum_sq_diff(attention_out(lw, w0, B), attn_ref_[size_t(b)]);
    });
  } else {
    if (mlp_inputs_.empty()) collect_moe_inputs();
    if (mlp_ref_.empty()) for_batches([&](int64_t b, int64_t, int64_t) { mlp_ref_.push_back(mlp_out(w_, b)); });
    for_batches([&](int64_t b, int64_t, int64_t) { loss += sum_sq_diff(mlp_out(lw, b), mlp_ref_[size_t(b)]); });
  }
  return loss;
}

// The loss of scale s on this rank's share: the block's output (--awq-loss block) or
// the balance linears' outputs together. Unquantized Linears on the same input (routers)
// are exact in original coordinates: they add nothing.
double LayerScaler::grid_loss(const Mapping& m, const std::vector<float>& s, const Hessians& hs) {
  if (opt_.block_loss && (m.kind == LinearGroup::QKV || m.kind == LinearGroup::GateUp)) {
    LayerWeights lw = w_;  // shares the FP tensors; the balance linears replaced
    for (size_t b : m.balance) linear_of(lw, slots_[b]).weight = be_.upload(fake_quant(b, s, hs));
    return block_loss(m, lw);
  }
  // The balance linears' outputs together: Σ_k tr(ΔW_k H_k ΔW_kᵀ) over the tokens each
  // reads (an expert: its routed ones), the same on every rank; divided by the rank count
  // so that the all-reduce keeps it.
  double loss = 0;
  for (size_t b : m.balance)
    loss += output_error(W_[b], fake_quant(b, s, hs), stats_[slot_group_[b]].hessian.sum()) / comm_.size();
  return loss;
}

// AWQ grid over α (awq, awq-dh, awq-joint), or SmoothQuant's closed form.
std::vector<float> LayerScaler::search(const Mapping& m) {
  bool usable = true;
  for (size_t b : m.balance) usable = usable && formats_[b].has_value();
  if (m.prev_linear >= 0) usable = usable && formats_[size_t(m.prev_linear)].has_value();
  if (!usable) {
    log_debug("layer ", layer_, " ", m.what, ": a module is left unquantized, group not scaled");
    return {};
  }
  if (starved(m.input)) {
    log_debug("layer ", layer_, " ", m.what, ": ", tokens_of_[m.input], " routed tokens, pair not scaled");
    return {};
  }
  if (plan_.scaling == ScalingMethod::SmoothQuant) return smoothquant_scale(m);
  const std::vector<double> xm = mean_abs(m.input);
  std::vector<double> loss(size_t(opt_.n_grid), 0.0);
  std::vector<std::vector<float>> cand(size_t(opt_.n_grid));
  for (int i = 0; i < opt_.n_grid; ++i) {
    cand[size_t(i)] = effective(m, awq_scales(xm, double(i) / opt_.n_grid));
    loss[size_t(i)] = grid_loss(m, cand[size_t(i)], joint_hessians(m, cand[size_t(i)]));
  }
  comm_.allreduce_sum(loss.data(), int64_t(loss.size()));
  const int best = awq_best_grid_point(loss);
  double norm = 0;  // elements of the compared outputs
  if (opt_.block_loss && (m.kind == LinearGroup::QKV || m.kind == LinearGroup::GateUp))
    norm = tokens_ * double(lm_.spec().hidden_size);
  else
    for (size_t b : m.balance) norm += tokens_of_[slot_group_[b]] * double(W_[b].dim(0));
  log_debug("layer ", layer_, " ", m.what, ": alpha ", double(best) / opt_.n_grid, " loss ", loss[size_t(best)] / norm,
            " (alpha 0: ", loss[0] / norm, ")");
  lap(m.what);
  return cand[size_t(best)];
}

// An unquantized Linear reading the scaled input (a router) takes s on its columns, so
// its outputs stay; rounded to the stored dtype, as the exported tensor is.
void LayerScaler::fold_into_dense(LinearWeights& lw, const std::vector<float>& s) {
  Tensor t = be_.download(lw.weight).to_f32();
  scale_columns(t, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = round_to_dtype(t.data<float>()[i], numerics_.norm_dtype);
  lw.weight = be_.upload(t);
}

void LayerScaler::fold(const std::vector<Mapping>& maps, const std::vector<std::vector<float>>& scale_of) {
  std::vector<std::vector<float>> input_scale(groups_.size());  // per group, empty = 1
  for (size_t mi = 0; mi < maps.size(); ++mi) {
    const Mapping& m = maps[mi];
    if (scale_of[mi].empty()) continue;
    const std::vector<float>& s = scale_of[mi];
    if (m.norm) {
      std::vector<float>& g = norm_host_[size_t(norm_index(m.norm))];
      fold_into_norm(g, s, numerics_.norm_dtype);  // s is already the effective scale
      Tensor t = Tensor::zeros(DType::F32, {int64_t(g.size())});
      std::copy(g.begin(), g.end(), t.data<float>());
      w_.*(m.norm) = be_.upload(t);
      for (LinearWeights LayerWeights::*d : m.dense) fold_into_dense(w_.*d, s);
    } else {
      unscale_last_rows(W_[size_t(m.prev_linear)], s);
      QS_ASSERT(!linear_of(w_, slots_[size_t(m.prev_linear)]).bias.defined(), "bias on a scaled linear");
    }
    for (size_t b : m.balance) {
      scale_columns(W_[b], s);
      input_scale[slot_group_[b]] = s;
    }
  }
  for (size_t i = 0; i < slots_.size(); ++i) linear_of(w_, slots_[i]).weight = be_.upload(W_[i]);
  Hs_.resize(groups_.size());
  mean_s_.resize(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const Tensor& H = stats_[g].hessian.sum();
    Hs_[g] = input_scale[g].empty() ? H : scale_hessian(H, input_scale[g]);
    mean_s_[g].resize(stats_[g].sum.size());
    for (size_t j = 0; j < mean_s_[g].size(); ++j)
      mean_s_[g][j] = tokens_of_[g] > 0 ? float(stats_[g].sum[j] / tokens_of_[g] /
                                                (input_scale[g].empty() ? 1.0 : double(input_scale[g][j])))
                                        : 0.0f;
  }
}

// Nearest rounding in AWQ's clip-searched ranges (none for q/k, SmoothQuant, or an
// expert without enough tokens); awq-dh then flips codes toward the mean input.
QuantizedLinear LayerScaler::quantize_ranged_slot(size_t i, const Tensor& H) {
  const auto scheme = Scheme::make(*formats_[i]);
  const Tensor& Wi = W_[i];
  const size_t g = slot_group_[i];
  GroupRanges ranges;
  // AWQ skips q/k: the q·kᵀ product makes their output error a poor clip criterion.
  const bool qk = i == 0 || i == 1;
  if (opt_.clip && !qk && plan_.scaling != ScalingMethod::SmoothQuant && !starved(g))
    ranges = awq_clip_search(Wi, H, *scheme, numerics_, opt_.clip_grid, opt_.clip_max_shrink);
  QuantizedLinear q = quantize_ranged(Wi, *scheme, ranges.empty() ? nullptr : &ranges, numerics_, modules_[i]);
  if (plan_.scaling == ScalingMethod::AwqDh && !starved(g)) {
    const std::vector<uint8_t> outl = kneedle_outliers(mean_s_[g], opt_.knee_tolerance);
    const FlipStats fs = heuristic_flip(q, Wi, mean_s_[g], outl, opt_.max_flip_percent, numerics_);
    int64_t n_out = 0;
    for (uint8_t o : outl) n_out += o;
    log_debug(modules_[i], ": ", n_out, " outlier channels, ", fs.flips, " flips (max ", fs.max_row_flips, " per row)");
  }
  return q;
}

void LayerScaler::quantize_scaled(size_t i) {
  if (!formats_[i]) return;
  const size_t g = slot_group_[i];
  const Tensor& H = Hs_[g];
  const Tensor& Wi = W_[i];
  const std::string& module = modules_[i];
  ScaledModule sm;
  if (formats_[i]->uses_kquant_fit()) {
    // +gptq fits the super-blocks the same way (on the scaled Hessian) and chooses the codes.
    if (plan_.gptq) return;
    sm.q = starved(g) ? kquant_rtn(Wi, *formats_[i], module) : kquant_fit(Wi, H, {}, *formats_[i], module);
    if (plan_.scaling == ScalingMethod::AwqJoint && !starved(g)) {  // the rounding descent, super-block fit fixed
      const double loss = refine_rounding(sm.q, Wi, damped_hessian(H, damp(g)), numerics_, opt_.joint.rounding_sweeps);
      log_debug(module, ": joint rounding loss ", loss);
    }
  } else if (plan_.scaling == ScalingMethod::AwqJoint && !starved(g)) {
    const auto scheme = Scheme::make(*formats_[i]);
    const Tensor Hd = damped_hessian(H, damp(g));
    const GroupRanges start = joint_block_ranges(Wi, Hd, *scheme, numerics_, opt_.joint);
    JointResult jr = joint_refine(Wi, Hd, *scheme, numerics_, &start, opt_.joint, module);
    log_debug(module, ": joint loss ", jr.loss_start, " -> ranges ", jr.loss_ranges, " -> rounding ", jr.loss_final);
    if (plan_.gptq) {
      std::vector<GroupParams> params;
      const int64_t ng = jr.q.n_groups();
      for (int64_t r = 0; r < jr.q.out_features; ++r)
        for (int64_t c = 0; c < ng; ++c) params.push_back(group_params(jr.q, r, c));
      out_.static_groups[module] = std::move(params);
      return;
    }
    sm.q = std::move(jr.q);
  } else {
    if (plan_.gptq) return;  // awq-joint+gptq, a starved expert: the pipeline's fallback
    sm.q = quantize_ranged_slot(i, H);
  }
  const double base = output_error(Wi, Tensor::zeros(DType::F32, Wi.shape()), H);
  sm.rel_error = base > 0 ? output_error(Wi, dequantize_exported(sm.q, numerics_), H) / base : 0.0;
  out_.quantized[module] = std::move(sm);
}

}  // namespace

ScaledLayer scale_layer(CausalLM& lm, int64_t layer, LayerWeights& w, const Tensor& h,
                        const LayerCalibration& cal, const Recipe& recipe, const MethodPlan& plan,
                        const ScalingOptions& opt, const ExportNumerics& numerics, Communicator& comm) {
  return LayerScaler(lm, layer, w, h, cal, recipe, plan, opt, numerics, comm).run();
}

}  // namespace qshard
