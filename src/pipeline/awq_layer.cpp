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

struct Slot {
  const char* name;
  LinearWeights LayerWeights::*member;
};
constexpr int kQKV = 0, kO = 1, kGateUp = 2, kDown = 3;
const LinearGroup kGroups[4] = {LinearGroup::QKV, LinearGroup::O, LinearGroup::GateUp, LinearGroup::Down};

const std::vector<Slot>& all_slots() {
  static const std::vector<Slot> s = {
      {"self_attn.q_proj", &LayerWeights::q}, {"self_attn.k_proj", &LayerWeights::k},
      {"self_attn.v_proj", &LayerWeights::v}, {"self_attn.o_proj", &LayerWeights::o},
      {"mlp.gate_proj", &LayerWeights::gate}, {"mlp.up_proj", &LayerWeights::up},
      {"mlp.down_proj", &LayerWeights::down}};
  return s;
}
int input_group_of(size_t slot) { return slot < 3 ? kQKV : slot == 3 ? kO : slot < 6 ? kGateUp : kDown; }

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
  void on_linear_input(int64_t, LinearGroup g, const Tensor& x) override {
    const Tensor host = be_.download(x);
    stats_[size_t(int(g))].add(host);
    if (g == LinearGroup::GateUp) mlp_inputs_.push_back(be_.upload(host));
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
  void on_linear_input(int64_t, LinearGroup g, const Tensor& x) override {
    if (g == g_) captured = x;
  }
  bool stop_after(LinearGroup g) const override { return g == g_; }
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

struct Ctx {
  CausalLM& lm;
  int64_t layer;
  LayerWeights& w;
  const Tensor& h;
  const LayerCalibration& cal;
  const ExportNumerics& numerics;
  Communicator& comm;
  Backend& be;
  std::vector<Tensor> mlp_inputs;  // per batch
  std::vector<Tensor> attn_ref, mlp_ref;
  double tokens = 0;  // all ranks

  template <class F>
  void for_batches(F&& f) {
    int64_t b = 0;
    for (int64_t w0 = 0; w0 < cal.windows; w0 += cal.per_batch, ++b) {
      const int64_t B = std::min(cal.per_batch, cal.windows - w0);
      f(b, w0, B);
    }
  }
  const Tensor* bias(const LinearWeights& lw) const { return lw.bias.defined() ? &lw.bias : nullptr; }

  // Attention output (after o_proj) of batch b with `lw` as the layer's weights.
  Tensor attention_out(const LayerWeights& lw, int64_t w0, int64_t B) {
    const int64_t S = cal.seqlen;
    Tensor rows = h.rows(w0 * S, (w0 + B) * S);  // not written: the forward stops before o_proj
    StopObserver stop(LinearGroup::O);
    lm.layer_forward(layer, lw, rows, B, S, &stop);
    Tensor y = be.zeros(DType::F32, {B * S, lm.spec().hidden_size});
    be.linear(stop.captured, lw.o.weight, bias(lw.o), y);
    return be.download(y);
  }
  Tensor mlp_out(const LayerWeights& lw, int64_t b) {
    const Tensor& x = mlp_inputs[size_t(b)];
    const int64_t T = x.dim(0), I = lm.spec().intermediate_size;
    Tensor g = be.zeros(DType::F32, {T, I}), u = be.zeros(DType::F32, {T, I});
    be.linear(x, lw.gate.weight, bias(lw.gate), g);
    be.linear(x, lw.up.weight, bias(lw.up), u);
    be.silu_mul(g, u, g);
    Tensor y = be.zeros(DType::F32, {T, lm.spec().hidden_size});
    be.linear(g, lw.down.weight, bias(lw.down), y);
    return be.download(y);
  }
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

}  // namespace

ScaledLayer scale_layer(CausalLM& lm, int64_t layer, LayerWeights& w, const Tensor& h,
                        const LayerCalibration& cal, const Recipe& recipe, const MethodPlan& plan,
                        const ScalingOptions& opt, const ExportNumerics& numerics, Communicator& comm) {
  Backend& be = lm.backend();
  const ModelSpec& spec = lm.spec();
  const int64_t S = cal.seqlen;
  Ctx ctx{lm, layer, w, h, cal, numerics, comm, be, {}, {}, {}, 0};
  ScaledLayer out;
  const auto& slots = all_slots();

  // Formats and host copies of the weights.
  std::vector<std::optional<QuantFormat>> formats;
  std::vector<Tensor> W;  // host F32, updated by folding
  std::vector<std::string> modules;
  for (const Slot& s : slots) {
    modules.push_back(lm.layer_tensor(layer, s.name));
    formats.push_back(recipe.format_for(modules.back()));
    W.push_back(be.download((w.*(s.member)).weight));
  }

  double t_mark = wall_seconds();
  auto lap = [&](const char* what) {
    const double t = wall_seconds();
    log_debug("layer ", layer, " ", what, ": ", t - t_mark, " s");
    t_mark = t;
  };
  // 1. Statistics of the FP layer (and its output, for AutoAWQ-style propagation).
  std::vector<InputStats> stats;
  const int64_t in_dims[4] = {spec.hidden_size, spec.q_dim(), spec.hidden_size, spec.intermediate_size};
  for (int g = 0; g < 4; ++g) stats.emplace_back(in_dims[g]);
  if (opt.propagate_fp) out.fp_output = be.zeros(DType::F32, {h.dim(0), h.dim(1)});
  {
    CaptureObserver cap(be, stats, ctx.mlp_inputs);
    ctx.for_batches([&](int64_t, int64_t w0, int64_t B) {
      Tensor scratch = be.upload(be.download(h.rows(w0 * S, (w0 + B) * S)));
      lm.layer_forward(layer, w, scratch, B, S, &cap);
      if (opt.propagate_fp) {
        Tensor dst = out.fp_output.rows(w0 * S, (w0 + B) * S);
        be.add_inplace(dst, scratch);
      }
    });
  }
  double tokens = double(cal.windows * S);
  comm.allreduce_sum(&tokens, 1);
  ctx.tokens = tokens;
  for (InputStats& st : stats) {
    comm.allreduce_sum(st.abs_sum.data(), int64_t(st.abs_sum.size()));
    comm.allreduce_sum(st.sum.data(), int64_t(st.sum.size()));
    allreduce_max_nonneg(st.abs_max, comm);
    if (comm.size() > 1) comm.allreduce_sum(st.hessian.sum().data<float>(), st.hessian.sum().numel());
  }
  auto mean_abs = [&](int g) {
    std::vector<double> m(stats[size_t(g)].abs_sum);
    for (double& v : m) v /= tokens;
    return m;
  };

  lap("statistics");
  // 2. Scaling groups (Llama): AutoAWQ adds v→o only when v and o have the same shape
  // (no GQA), as a scale on v's output rows must match o's input columns one to one.
  std::vector<Mapping> maps = {{"input_layernorm->q,k,v", {0, 1, 2}, kQKV, &LayerWeights::input_norm, -1}};
  if (W[2].shape() == W[3].shape()) maps.push_back({"v->o", {3}, kO, nullptr, 2});
  maps.push_back({"post_attention_layernorm->gate,up", {4, 5}, kGateUp, &LayerWeights::post_attention_norm, -1});
  maps.push_back({"up->down", {6}, kDown, nullptr, 5});
  if (plan.scaling == ScalingMethod::SmoothQuant)  // the reference smooths norm inputs only
    maps.erase(std::remove_if(maps.begin(), maps.end(), [](const Mapping& m) { return m.norm == nullptr; }),
               maps.end());

  std::vector<std::vector<float>> norm_host(2);
  norm_host[0] = [&] { Tensor t = be.download(w.input_norm); return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }();
  norm_host[1] = [&] { Tensor t = be.download(w.post_attention_norm); return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }();
  auto norm_index = [](Tensor LayerWeights::*n) { return n == &LayerWeights::input_norm ? 0 : 1; };

  // Effective scale after folding (norm weights rounded to their stored dtype).
  auto effective = [&](const Mapping& m, std::vector<float> s) {
    if (!m.norm) return s;
    std::vector<float> g = norm_host[size_t(norm_index(m.norm))];
    return fold_into_norm(g, s, numerics.norm_dtype);
  };
  // Ŵ = Q(W·s)/s in original coordinates, for the slot's format; joint: J1 ranges.
  auto fake_quant = [&](size_t slot, const std::vector<float>& s, const Tensor& hs) {
    if (formats[slot]->uses_kquant_fit()) {
      Tensor ws = W[slot].to_f32();
      scale_columns(ws, s);
      const Tensor& H = stats[size_t(input_group_of(slot))].hessian.sum();
      Tensor wh = dequantize_exported(kquant_fit(ws, H, s, *formats[slot], modules[slot]), numerics);
      unscale_columns(wh, s);
      return wh;
    }
    const auto scheme = Scheme::make(*formats[slot]);
    GroupRanges ranges;
    if (plan.scaling == ScalingMethod::AwqJoint) {
      // Inside the exponent grid a coarser range grid (twice the step) keeps the search
      // cheap; the final fit at the chosen exponent uses the full grid and descents.
      Tensor ws = W[slot].to_f32();
      scale_columns(ws, s);
      JointOptions coarse = opt.joint;
      coarse.range_step *= 2;
      ranges = joint_block_ranges(ws, hs, *scheme, numerics, coarse);
    }
    return awq_fake_quant(W[slot], s, *scheme, &ranges, numerics, modules[slot]);
  };

  std::vector<std::vector<float>> scale_of(maps.size());
  for (size_t mi = 0; mi < maps.size(); ++mi) {
    const Mapping& m = maps[mi];
    bool usable = true;
    for (size_t b : m.balance) usable = usable && formats[b].has_value();
    if (m.prev_linear >= 0) usable = usable && formats[size_t(m.prev_linear)].has_value();
    if (!usable) {
      log_debug("layer ", layer, " ", m.what, ": a module is left unquantized, group not scaled");
      continue;
    }
    const int64_t d = in_dims[m.input];
    if (plan.scaling == ScalingMethod::SmoothQuant) {
      std::vector<float> wmax(size_t(d), 0.0f);
      for (size_t b : m.balance) {
        const auto cm = column_absmax(W[b]);
        for (int64_t j = 0; j < d; ++j) wmax[size_t(j)] = std::max(wmax[size_t(j)], cm[size_t(j)]);
      }
      std::vector<double> amax(stats[size_t(m.input)].abs_max.begin(), stats[size_t(m.input)].abs_max.end());
      scale_of[mi] = effective(m, smoothquant_scales(amax, wmax, opt.smooth_alpha));
      continue;
    }
    // AWQ grid over α (awq, awq-dh, awq-joint).
    const std::vector<double> xm = mean_abs(m.input);
    const Tensor& H = stats[size_t(m.input)].hessian.sum();
    std::vector<double> loss(size_t(opt.n_grid), 0.0);
    std::vector<std::vector<float>> cand(size_t(opt.n_grid));
    for (int i = 0; i < opt.n_grid; ++i) {
      const double alpha = double(i) / opt.n_grid;
      cand[size_t(i)] = effective(m, awq_scales(xm, alpha));
      const std::vector<float>& s = cand[size_t(i)];
      const Tensor hs =
          plan.scaling == ScalingMethod::AwqJoint
              ? damped_hessian(scale_hessian(H, s), joint_damp(opt.joint, d, tokens))
              : Tensor();
      if (opt.block_loss && (m.input == kQKV || m.input == kGateUp)) {
        LayerWeights lw = w;  // shares the FP tensors; the balance linears replaced
        for (size_t b : m.balance) (lw.*(slots[b].member)).weight = be.upload(fake_quant(b, s, hs));
        if (m.input == kQKV) {
          if (ctx.attn_ref.empty())
            ctx.for_batches([&](int64_t, int64_t w0, int64_t B) { ctx.attn_ref.push_back(ctx.attention_out(w, w0, B)); });
          ctx.for_batches([&](int64_t b, int64_t w0, int64_t B) {
            loss[size_t(i)] += sum_sq_diff(ctx.attention_out(lw, w0, B), ctx.attn_ref[size_t(b)]);
          });
        } else {
          if (ctx.mlp_ref.empty())
            ctx.for_batches([&](int64_t b, int64_t, int64_t) { ctx.mlp_ref.push_back(ctx.mlp_out(w, b)); });
          ctx.for_batches([&](int64_t b, int64_t, int64_t) {
            loss[size_t(i)] += sum_sq_diff(ctx.mlp_out(lw, b), ctx.mlp_ref[size_t(b)]);
          });
        }
      } else {
        // The balance linears' outputs together: Σ_k tr(ΔW_k H ΔW_kᵀ) over all tokens, the
        // same on every rank; divided by the rank count so that the all-reduce keeps it.
        for (size_t b : m.balance) loss[size_t(i)] += output_error(W[b], fake_quant(b, s, hs), H) / comm.size();
      }
    }
    comm.allreduce_sum(loss.data(), int64_t(loss.size()));
    const int best = awq_best_grid_point(loss);
    scale_of[mi] = cand[size_t(best)];
    double norm = 0;  // elements of the compared outputs
    if (opt.block_loss && (m.input == kQKV || m.input == kGateUp)) norm = tokens * double(spec.hidden_size);
    else for (size_t b : m.balance) norm += tokens * double(W[b].dim(0));
    log_debug("layer ", layer, " ", m.what, ": alpha ", double(best) / opt.n_grid, " loss ", loss[size_t(best)] / norm,
              " (alpha 0: ", loss[0] / norm, ")");
    lap(m.what);
  }

  // 3. Fold every scale (all were searched on the original weights, as AutoAWQ does).
  std::vector<std::vector<float>> input_scale(4);  // per input group, empty = 1
  for (size_t mi = 0; mi < maps.size(); ++mi) {
    const Mapping& m = maps[mi];
    if (scale_of[mi].empty()) continue;
    const std::vector<float>& s = scale_of[mi];
    if (m.norm) {
      std::vector<float>& g = norm_host[size_t(norm_index(m.norm))];
      fold_into_norm(g, s, numerics.norm_dtype);  // s is already the effective scale
      Tensor t = Tensor::zeros(DType::F32, {int64_t(g.size())});
      std::copy(g.begin(), g.end(), t.data<float>());
      w.*(m.norm) = be.upload(t);
    } else {
      unscale_last_rows(W[size_t(m.prev_linear)], s);
      QS_ASSERT(!(w.*(slots[size_t(m.prev_linear)].member)).bias.defined(), "bias on a scaled linear");
    }
    for (size_t b : m.balance) scale_columns(W[b], s);
    input_scale[size_t(m.input)] = s;
  }
  for (size_t i = 0; i < slots.size(); ++i) (w.*(slots[i].member)).weight = be.upload(W[i]);
  std::vector<Tensor> Hs(4);
  std::vector<std::vector<float>> mean_s(4);
  for (int g = 0; g < 4; ++g) {
    const Tensor& H = stats[size_t(g)].hessian.sum();
    Hs[size_t(g)] = input_scale[size_t(g)].empty() ? H : scale_hessian(H, input_scale[size_t(g)]);
    mean_s[size_t(g)].resize(stats[size_t(g)].sum.size());
    for (size_t j = 0; j < mean_s[size_t(g)].size(); ++j)
      mean_s[size_t(g)][j] = float(stats[size_t(g)].sum[j] / tokens /
                                   (input_scale[size_t(g)].empty() ? 1.0 : double(input_scale[size_t(g)][j])));
  }

  // 4. Ranges and quantization of the scaled weights.
  if (plan.gptq && plan.scaling != ScalingMethod::AwqJoint) return out;
  for (size_t i = 0; i < slots.size(); ++i) {
    if (!formats[i]) continue;
    const auto scheme = Scheme::make(*formats[i]);
    const Tensor& H = Hs[size_t(input_group_of(i))];
    ScaledModule sm;
    if (formats[i]->uses_kquant_fit()) {
      // +gptq fits the super-blocks the same way (on the scaled Hessian) and chooses the codes.
      if (plan.gptq) continue;
      sm.q = kquant_fit(W[i], H, {}, *formats[i], modules[i]);
      if (plan.scaling == ScalingMethod::AwqJoint) {  // the rounding descent, super-block fit fixed
        const Tensor Hd = damped_hessian(H, joint_damp(opt.joint, W[i].dim(1), tokens));
        const double loss = refine_rounding(sm.q, W[i], Hd, numerics, opt.joint.rounding_sweeps);
        log_debug(modules[i], ": joint rounding loss ", loss);
      }
    } else if (plan.scaling == ScalingMethod::AwqJoint) {
      const Tensor Hd = damped_hessian(H, joint_damp(opt.joint, W[i].dim(1), tokens));
      const GroupRanges start = joint_block_ranges(W[i], Hd, *scheme, numerics, opt.joint);
      JointResult jr = joint_refine(W[i], Hd, *scheme, numerics, &start, opt.joint, modules[i]);
      log_debug(modules[i], ": joint loss ", jr.loss_start, " -> ranges ", jr.loss_ranges, " -> rounding ",
                jr.loss_final);
      if (plan.gptq) {
        std::vector<GroupParams> params;
        const int64_t ng = jr.q.n_groups();
        for (int64_t r = 0; r < jr.q.out_features; ++r)
          for (int64_t g = 0; g < ng; ++g) params.push_back(group_params(jr.q, r, g));
        out.static_groups[modules[i]] = std::move(params);
        continue;
      }
      sm.q = std::move(jr.q);
    } else {
      GroupRanges ranges;
      // AWQ skips q/k: the q·kᵀ product makes their output error a poor clip criterion.
      const bool qk = i == 0 || i == 1;
      if (opt.clip && !qk && plan.scaling != ScalingMethod::SmoothQuant)
        ranges = awq_clip_search(W[i], H, *scheme, numerics, opt.clip_grid, opt.clip_max_shrink);
      sm.q = quantize_ranged(W[i], *scheme, ranges.empty() ? nullptr : &ranges, numerics, modules[i]);
      if (plan.scaling == ScalingMethod::AwqDh) {
        const std::vector<float>& mu = mean_s[size_t(input_group_of(i))];
        const std::vector<uint8_t> outl = kneedle_outliers(mu, opt.knee_tolerance);
        const FlipStats fs = heuristic_flip(sm.q, W[i], mu, outl, opt.max_flip_percent, numerics);
        int64_t n_out = 0;
        for (uint8_t o : outl) n_out += o;
        log_debug(modules[i], ": ", n_out, " outlier channels, ", fs.flips, " flips (max ", fs.max_row_flips,
                  " per row)");
      }
    }
    const double base = output_error(W[i], Tensor::zeros(DType::F32, W[i].shape()), H);
    sm.rel_error = base > 0 ? output_error(W[i], dequantize_exported(sm.q, numerics), H) / base : 0.0;
    out.quantized[modules[i]] = std::move(sm);
  }
  lap("ranges and quantization");
  return out;
}

}  // namespace qshard
