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

// The scaling groups below index the Llama layer's Linears and groups in the table's
// order (model/architecture.h): q, k, v, o, gate, up, down; qkv, o, gate_up, down.
constexpr int kQKV = 0, kO = 1, kGateUp = 2, kDown = 3;
int input_group_of(const LinearSlot& s) { return int(s.group); }

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

class CaptureObserver final : public LayerObserver {
 public:
  CaptureObserver(Backend& be, std::vector<InputStats>& stats, std::vector<Tensor>& mlp_inputs)
      : be_(be), stats_(stats), mlp_inputs_(mlp_inputs) {}
  void on_linear_input(int64_t, GroupId g, const Tensor& x) override {
    const Tensor host = be_.download(x);
    stats_[size_t(int(g.group))].add(host);
    if (g.group == LinearGroup::GateUp) mlp_inputs_.push_back(be_.upload(host));
  }

 private:
  Backend& be_;
  std::vector<InputStats>& stats_;
  std::vector<Tensor>& mlp_inputs_;
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

// A scaling group: the linears sharing one input scale, and what the scale folds into.
struct Mapping {
  const char* what;            // for logs
  std::vector<size_t> balance; // slot indices
  int input;                   // input group
  Tensor LayerWeights::*norm;  // preceding RMSNorm, or null
  int prev_linear = -1;        // preceding linear's slot (rows scaled by 1/s), or −1
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

// One layer's AWQ-family / SmoothQuant pass, in the steps scale_layer names.
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
  void collect_statistics();                // 1. the FP layer's input statistics (and output)
  std::vector<Mapping> mappings() const;    // 2. the scaling groups
  std::vector<float> search(const Mapping& m);  // a group's scale; empty: left unscaled
  std::vector<float> smoothquant_scale(const Mapping& m);
  double grid_loss(const Mapping& m, const std::vector<float>& s, const Tensor& hs);
  std::vector<float> effective(const Mapping& m, std::vector<float> s);
  Tensor fake_quant(size_t slot, const std::vector<float>& s, const Tensor& hs);
  // 3. every scale folded (all were searched on the original weights, as AutoAWQ does)
  void fold(const std::vector<Mapping>& maps, const std::vector<std::vector<float>>& scale_of);
  void quantize_scaled(size_t i);           // 4. ranges and quantization of the scaled weights
  std::vector<double> mean_abs(int g) const {
    std::vector<double> m(stats_[size_t(g)].abs_sum);
    for (double& v : m) v /= tokens_;
    return m;
  }
  static int norm_index(Tensor LayerWeights::*n) { return n == &LayerWeights::input_norm ? 0 : 1; }
  // The block outputs --awq-loss block compares, per calibration batch.
  template <class F>
  void for_batches(F&& f) const {
    int64_t b = 0;
    for (int64_t w0 = 0; w0 < cal_.windows; w0 += cal_.per_batch, ++b)
      f(b, w0, std::min(cal_.per_batch, cal_.windows - w0));
  }
  Tensor attention_out(const LayerWeights& lw, int64_t w0, int64_t B);
  Tensor mlp_out(const LayerWeights& lw, int64_t b);
  double block_loss(const Mapping& m, const LayerWeights& lw);
  void lap(const std::string& what) {
    const double t = wall_seconds();
    log_debug("layer ", layer_, " ", what, ": ", t - t_mark_, " s");
    t_mark_ = t;
  }

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
  std::vector<std::optional<QuantFormat>> formats_;
  std::vector<Tensor> W_;  // host F32, updated by folding
  std::vector<std::string> modules_;
  std::vector<int64_t> in_dims_;
  std::vector<InputStats> stats_;
  std::vector<Tensor> mlp_inputs_;         // per batch: the MLP's (gate/up's) input
  std::vector<Tensor> attn_ref_, mlp_ref_;  // per batch: the FP blocks' outputs (--awq-loss block)
  double tokens_ = 0;  // all ranks
  std::vector<std::vector<float>> norm_host_;  // input_layernorm, post_attention_layernorm
  std::vector<Tensor> Hs_;                     // per input group, in scaled coordinates
  std::vector<std::vector<float>> mean_s_;     // per input group: mean input / scale
  double t_mark_ = wall_seconds();
};

LayerScaler::LayerScaler(CausalLM& lm, int64_t layer, LayerWeights& w, const Tensor& h, const LayerCalibration& cal,
                         const Recipe& recipe, const MethodPlan& plan, const ScalingOptions& opt,
                         const ExportNumerics& numerics, Communicator& comm)
    : lm_(lm), layer_(layer), w_(w), h_(h), cal_(cal), plan_(plan), opt_(opt), numerics_(numerics), comm_(comm),
      be_(lm.backend()), slots_(layer_linears(lm.spec())) {
  QS_ASSERT(!lm.arch().is_moe(), "scale_layer on an MoE layer (check_quantize_inputs refuses it)");
  QS_ASSERT(slots_.size() == 7 && lm.arch().groups.size() == 4, "scale_layer: a Llama-shaped layer");
  // Formats and host copies of the weights.
  for (const LinearSlot& s : slots_) {
    modules_.push_back(lm.layer_tensor(layer, s.name));
    formats_.push_back(recipe.format_for(modules_.back()));
    W_.push_back(be_.download((w.*(s.member)).weight));
  }
  for (const GroupSlot& g : lm.arch().groups) in_dims_.push_back(group_in_features(lm.spec(), g));
}

void LayerScaler::collect_statistics() {
  const int64_t S = cal_.seqlen;
  for (int64_t d : in_dims_) stats_.emplace_back(d);
  if (opt_.propagate_fp) out_.fp_output = be_.zeros(DType::F32, {h_.dim(0), h_.dim(1)});
  {
    CaptureObserver cap(be_, stats_, mlp_inputs_);
    for_batches([&](int64_t, int64_t w0, int64_t B) {
      Tensor scratch = be_.upload(be_.download(h_.rows(w0 * S, (w0 + B) * S)));
      lm_.layer_forward(layer_, w_, scratch, B, S, &cap);
      if (opt_.propagate_fp) {
        Tensor dst = out_.fp_output.rows(w0 * S, (w0 + B) * S);
        be_.add_inplace(dst, scratch);
      }
    });
  }
  double tokens = double(cal_.windows * S);
  comm_.allreduce_sum(&tokens, 1);
  tokens_ = tokens;
  for (InputStats& st : stats_) {
    comm_.allreduce_sum(st.abs_sum.data(), int64_t(st.abs_sum.size()));
    comm_.allreduce_sum(st.sum.data(), int64_t(st.sum.size()));
    allreduce_max_nonneg(st.abs_max, comm_);
    if (comm_.size() > 1) comm_.allreduce_sum(st.hessian.sum().data<float>(), st.hessian.sum().numel());
  }
  auto host = [&](const Tensor& n) {
    const Tensor t = be_.download(n);
    return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
  };
  norm_host_ = {host(w_.input_norm), host(w_.post_attention_norm)};
}

// Scaling groups (Llama): AutoAWQ adds v→o only when v and o have the same shape (no
// GQA), as a scale on v's output rows must match o's input columns one to one.
std::vector<Mapping> LayerScaler::mappings() const {
  std::vector<Mapping> maps = {{"input_layernorm->q,k,v", {0, 1, 2}, kQKV, &LayerWeights::input_norm, -1}};
  if (W_[2].shape() == W_[3].shape()) maps.push_back({"v->o", {3}, kO, nullptr, 2});
  maps.push_back({"post_attention_layernorm->gate,up", {4, 5}, kGateUp, &LayerWeights::post_attention_norm, -1});
  maps.push_back({"up->down", {6}, kDown, nullptr, 5});
  if (plan_.scaling == ScalingMethod::SmoothQuant)  // the reference smooths norm inputs only
    maps.erase(std::remove_if(maps.begin(), maps.end(), [](const Mapping& m) { return m.norm == nullptr; }),
               maps.end());
  return maps;
}

// Effective scale after folding (norm weights rounded to their stored dtype).
std::vector<float> LayerScaler::effective(const Mapping& m, std::vector<float> s) {
  if (!m.norm) return s;
  std::vector<float> g = norm_host_[size_t(norm_index(m.norm))];
  return fold_into_norm(g, s, numerics_.norm_dtype);
}

// Ŵ = Q(W·s)/s in original coordinates, for the slot's format; joint: J1 ranges.
Tensor LayerScaler::fake_quant(size_t slot, const std::vector<float>& s, const Tensor& hs) {
  if (formats_[slot]->uses_kquant_fit()) {
    Tensor ws = W_[slot].to_f32();
    scale_columns(ws, s);
    const Tensor& H = stats_[size_t(input_group_of(slots_[slot]))].hessian.sum();
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
    ranges = joint_block_ranges(ws, hs, *scheme, numerics_, coarse);
  }
  return awq_fake_quant(W_[slot], s, *scheme, &ranges, numerics_, modules_[slot]);
}

std::vector<float> LayerScaler::smoothquant_scale(const Mapping& m) {
  const int64_t d = in_dims_[size_t(m.input)];
  std::vector<float> wmax(size_t(d), 0.0f);
  for (size_t b : m.balance) {
    const auto cm = column_absmax(W_[b]);
    for (int64_t j = 0; j < d; ++j) wmax[size_t(j)] = std::max(wmax[size_t(j)], cm[size_t(j)]);
  }
  std::vector<double> amax(stats_[size_t(m.input)].abs_max.begin(), stats_[size_t(m.input)].abs_max.end());
  return effective(m, smoothquant_scales(amax, wmax, opt_.smooth_alpha));
}

const Tensor* bias_of(const LinearWeights& lw) { return lw.bias.defined() ? &lw.bias : nullptr; }

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

// MLP output (after down_proj) of batch b with `lw` as the layer's weights.
Tensor LayerScaler::mlp_out(const LayerWeights& lw, int64_t b) {
  const Tensor& x = mlp_inputs_[size_t(b)];
  const int64_t T = x.dim(0), I = lm_.spec().intermediate_size;
  Tensor g = be_.zeros(DType::F32, {T, I}), u = be_.zeros(DType::F32, {T, I});
  be_.linear(x, lw.gate.weight, bias_of(lw.gate), g);
  be_.linear(x, lw.up.weight, bias_of(lw.up), u);
  be_.silu_mul(g, u, g);
  Tensor y = be_.zeros(DType::F32, {T, lm_.spec().hidden_size});
  be_.linear(g, lw.down.weight, bias_of(lw.down), y);
  return be_.download(y);
}

// Σ over this rank's batches of the squared difference between the block's output with
// `lw` and with the FP layer (computed once per block).
double LayerScaler::block_loss(const Mapping& m, const LayerWeights& lw) {
  double loss = 0;
  if (m.input == kQKV) {
    if (attn_ref_.empty())
      for_batches([&](int64_t, int64_t w0, int64_t B) { attn_ref_.push_back(attention_out(w_, w0, B)); });
    for_batches([&](int64_t b, int64_t w0, int64_t B) {
      loss += sum_sq_diff(attention_out(lw, w0, B), attn_ref_[size_t(b)]);
    });
  } else {
    if (mlp_ref_.empty()) for_batches([&](int64_t b, int64_t, int64_t) { mlp_ref_.push_back(mlp_out(w_, b)); });
    for_batches([&](int64_t b, int64_t, int64_t) { loss += sum_sq_diff(mlp_out(lw, b), mlp_ref_[size_t(b)]); });
  }
  return loss;
}

// The loss of scale s on this rank's share: the block's output (--awq-loss block) or
// the balance linears' outputs together.
double LayerScaler::grid_loss(const Mapping& m, const std::vector<float>& s, const Tensor& hs) {
  if (opt_.block_loss && (m.input == kQKV || m.input == kGateUp)) {
    LayerWeights lw = w_;  // shares the FP tensors; the balance linears replaced
    for (size_t b : m.balance) (lw.*(slots_[b].member)).weight = be_.upload(fake_quant(b, s, hs));
    return block_loss(m, lw);
  }
  // The balance linears' outputs together: Σ_k tr(ΔW_k H ΔW_kᵀ) over all tokens, the same
  // on every rank; divided by the rank count so that the all-reduce keeps it.
  const Tensor& H = stats_[size_t(m.input)].hessian.sum();
  double loss = 0;
  for (size_t b : m.balance) loss += output_error(W_[b], fake_quant(b, s, hs), H) / comm_.size();
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
  if (plan_.scaling == ScalingMethod::SmoothQuant) return smoothquant_scale(m);
  const int64_t d = in_dims_[size_t(m.input)];
  const std::vector<double> xm = mean_abs(m.input);
  const Tensor& H = stats_[size_t(m.input)].hessian.sum();
  std::vector<double> loss(size_t(opt_.n_grid), 0.0);
  std::vector<std::vector<float>> cand(size_t(opt_.n_grid));
  for (int i = 0; i < opt_.n_grid; ++i) {
    cand[size_t(i)] = effective(m, awq_scales(xm, double(i) / opt_.n_grid));
    const Tensor hs = plan_.scaling == ScalingMethod::AwqJoint
                          ? damped_hessian(scale_hessian(H, cand[size_t(i)]), joint_damp(opt_.joint, d, tokens_))
                          : Tensor();
    loss[size_t(i)] = grid_loss(m, cand[size_t(i)], hs);
  }
  comm_.allreduce_sum(loss.data(), int64_t(loss.size()));
  const int best = awq_best_grid_point(loss);
  double norm = 0;  // elements of the compared outputs
  if (opt_.block_loss && (m.input == kQKV || m.input == kGateUp)) norm = tokens_ * double(lm_.spec().hidden_size);
  else for (size_t b : m.balance) norm += tokens_ * double(W_[b].dim(0));
  log_debug("layer ", layer_, " ", m.what, ": alpha ", double(best) / opt_.n_grid, " loss ", loss[size_t(best)] / norm,
            " (alpha 0: ", loss[0] / norm, ")");
  lap(m.what);
  return cand[size_t(best)];
}

void LayerScaler::fold(const std::vector<Mapping>& maps, const std::vector<std::vector<float>>& scale_of) {
  std::vector<std::vector<float>> input_scale(4);  // per input group, empty = 1
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
    } else {
      unscale_last_rows(W_[size_t(m.prev_linear)], s);
      QS_ASSERT(!(w_.*(slots_[size_t(m.prev_linear)].member)).bias.defined(), "bias on a scaled linear");
    }
    for (size_t b : m.balance) scale_columns(W_[b], s);
    input_scale[size_t(m.input)] = s;
  }
  for (size_t i = 0; i < slots_.size(); ++i) (w_.*(slots_[i].member)).weight = be_.upload(W_[i]);
  Hs_.resize(4);
  mean_s_.resize(4);
  for (int g = 0; g < 4; ++g) {
    const Tensor& H = stats_[size_t(g)].hessian.sum();
    Hs_[size_t(g)] = input_scale[size_t(g)].empty() ? H : scale_hessian(H, input_scale[size_t(g)]);
    mean_s_[size_t(g)].resize(stats_[size_t(g)].sum.size());
    for (size_t j = 0; j < mean_s_[size_t(g)].size(); ++j)
      mean_s_[size_t(g)][j] = float(stats_[size_t(g)].sum[j] / tokens_ /
                                    (input_scale[size_t(g)].empty() ? 1.0 : double(input_scale[size_t(g)][j])));
  }
}

void LayerScaler::quantize_scaled(size_t i) {
  if (!formats_[i]) return;
  const auto scheme = Scheme::make(*formats_[i]);
  const Tensor& H = Hs_[size_t(input_group_of(slots_[i]))];
  const Tensor& Wi = W_[i];
  const std::string& module = modules_[i];
  ScaledModule sm;
  if (formats_[i]->uses_kquant_fit()) {
    // +gptq fits the super-blocks the same way (on the scaled Hessian) and chooses the codes.
    if (plan_.gptq) return;
    sm.q = kquant_fit(Wi, H, {}, *formats_[i], module);
    if (plan_.scaling == ScalingMethod::AwqJoint) {  // the rounding descent, super-block fit fixed
      const Tensor Hd = damped_hessian(H, joint_damp(opt_.joint, Wi.dim(1), tokens_));
      const double loss = refine_rounding(sm.q, Wi, Hd, numerics_, opt_.joint.rounding_sweeps);
      log_debug(module, ": joint rounding loss ", loss);
    }
  } else if (plan_.scaling == ScalingMethod::AwqJoint) {
    const Tensor Hd = damped_hessian(H, joint_damp(opt_.joint, Wi.dim(1), tokens_));
    const GroupRanges start = joint_block_ranges(Wi, Hd, *scheme, numerics_, opt_.joint);
    JointResult jr = joint_refine(Wi, Hd, *scheme, numerics_, &start, opt_.joint, module);
    log_debug(module, ": joint loss ", jr.loss_start, " -> ranges ", jr.loss_ranges, " -> rounding ", jr.loss_final);
    if (plan_.gptq) {
      std::vector<GroupParams> params;
      const int64_t ng = jr.q.n_groups();
      for (int64_t r = 0; r < jr.q.out_features; ++r)
        for (int64_t g = 0; g < ng; ++g) params.push_back(group_params(jr.q, r, g));
      out_.static_groups[module] = std::move(params);
      return;
    }
    sm.q = std::move(jr.q);
  } else {
    GroupRanges ranges;
    // AWQ skips q/k: the q·kᵀ product makes their output error a poor clip criterion.
    const bool qk = i == 0 || i == 1;
    if (opt_.clip && !qk && plan_.scaling != ScalingMethod::SmoothQuant)
      ranges = awq_clip_search(Wi, H, *scheme, numerics_, opt_.clip_grid, opt_.clip_max_shrink);
    sm.q = quantize_ranged(Wi, *scheme, ranges.empty() ? nullptr : &ranges, numerics_, module);
    if (plan_.scaling == ScalingMethod::AwqDh) {
      const std::vector<float>& mu = mean_s_[size_t(input_group_of(slots_[i]))];
      const std::vector<uint8_t> outl = kneedle_outliers(mu, opt_.knee_tolerance);
      const FlipStats fs = heuristic_flip(sm.q, Wi, mu, outl, opt_.max_flip_percent, numerics_);
      int64_t n_out = 0;
      for (uint8_t o : outl) n_out += o;
      log_debug(module, ": ", n_out, " outlier channels, ", fs.flips, " flips (max ", fs.max_row_flips, " per row)");
    }
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
