#include "pipeline/quantize.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/log.h"
#include "core/phase_timer.h"
#include "core/stop.h"
#include "core/test_hooks.h"
#include "dist/partition.h"
#include "pipeline/hessian_sum.h"
#include "pipeline/layer_owner.h"
#include "pipeline/moe_experts.h"
#include "pipeline/row_parallel.h"
#include "pipeline/staged_layer.h"
#include "quant/quant_device.h"
#include "pipeline/finite_check.h"

namespace qshard {

namespace {

// A safe point (core/stop.h): everything before it is either committed to the
// checkpoint or redone on resume. Every rank calls it at the same places, so one rank's
// signal stops all of them here together.
void stop_point(Communicator& comm) {
  int64_t sig = stop_signal();
  comm.allreduce_max(&sig, 1);
  if (sig) throw Stopped(int(sig), "stopped at a safe point");
}

// Accumulates the Hessian of the linear groups it is asked to watch. In MoE layers the
// routed experts are skipped (their owners fit them from the rows exchanged once per
// layer, moe_experts.h); the pass that feeds their gate/up captures those rows.
class HessianObserver final : public LayerObserver {
 public:
  explicit HessianObserver(Backend& be) : be_(be) {}
  void watch(GroupId g, HessianSum* acc) { targets_[g] = acc; }
  void capture(RoutedCapture* c) { capture_ = c; }
  void on_linear_input(int64_t, GroupId g, const Tensor& x) override {
    auto it = targets_.find(g);
    if (it == targets_.end()) return;
    PhaseTimer timer(Phase::Hessian);
    it->second->add(be_.download(x));
  }
  // A capturing pass runs on to the MoE input even when its last watched group is before it.
  bool stop_after(GroupId g) const override {
    return !targets_.empty() && g == targets_.rbegin()->first && !(capture_ && g.group < LinearGroup::GateUp);
  }
  bool on_moe_input(int64_t, const Tensor& x, const Routing& r) override {
    if (capture_) capture_->add(x, r);
    return true;
  }
  bool watching() const { return !targets_.empty() || capture_; }

 private:
  Backend& be_;
  std::map<GroupId, HessianSum*> targets_;
  RoutedCapture* capture_ = nullptr;
};

bool is_routed_expert(const GroupSlot& g) { return g.expert != kNoExpert && g.expert != kSharedExpert; }

Tensor copy_rows(Backend& be, const Tensor& t) { return be.upload(be.download(t)); }

// Summed over ranks so that every rank count gives the same bits (hessian_sum.h).
void allreduce_hessian(HessianSum& acc, Communicator& comm) {
  PhaseTimer timer(Phase::Allreduce);
  acc.allreduce(comm);
}

// Runs the current layer over every calibration batch: with an observer to collect
// statistics (h untouched), or without one to advance h to the layer's outputs.
void run_layer(CausalLM& lm, int64_t layer, const LayerWeights& w, Tensor& h, int64_t windows,
               int64_t seqlen, int64_t per_batch, HessianObserver* observer) {
  PhaseTimer timer(Phase::Forward);
  Backend& be = lm.backend();
  for (int64_t w0 = 0; w0 < windows; w0 += per_batch) {
    const int64_t B = std::min(per_batch, windows - w0);
    Tensor rows = h.rows(w0 * seqlen, (w0 + B) * seqlen);
    if (observer) {
      Tensor scratch = copy_rows(be, rows);
      lm.layer_forward(layer, w, scratch, B, seqlen, observer);
    } else {
      lm.layer_forward(layer, w, rows, B, seqlen, nullptr);
    }
  }
}

using QuantizedResult = RowQuantized;

QuantizedResult quantize_weight(Backend& be, const Tensor& w, const Tensor* hessian, const Scheme& scheme,
                                const QuantizeOptions& o, const std::string& name,
                                const std::vector<GroupParams>* fixed_groups = nullptr,
                                GptqFactorCache* factor = nullptr) {
  scheme.format().check_divides(w.dim(1), name);
  QuantizedResult r;
  if (o.method == "rtn") {
    r.q = rtn_quantize_on(be, w, scheme, o.clip, name);
  } else {
    GptqOptions go = o.gptq;
    go.fixed_groups = fixed_groups;
    go.factor_cache = factor;
    GptqResult g = gptq_quantize_on(be, w, *hessian, scheme, go, name);
    r.q = std::move(g.q);
    r.loss = g.loss;
    r.escalations = g.damp_escalations;
    r.damp_abs = g.damp_abs;
  }
  return r;
}

// A host F32 tensor converted to `dtype` (F32, F16 or BF16; round to nearest even).
Tensor to_dtype(const Tensor& f32, DType dtype) {
  if (dtype != DType::BF16 && dtype != DType::F16) return f32;
  Tensor t = Tensor::zeros(dtype, f32.shape());
  for (int64_t i = 0; i < f32.numel(); ++i)
    t.data<uint16_t>()[i] = dtype == DType::BF16 ? f32_to_bf16(f32.data<float>()[i]) : f32_to_f16(f32.data<float>()[i]);
  return t;
}

void export_dense_if_present(Exporter* ex, const TensorSource& src, const std::string& name) {
  PhaseTimer timer(Phase::Export);
  if (!ex || !src.contains(name)) return;
  ex->add_dense(name, src.get(name));
  src.release(name);  // written (or copied): its mapped pages need not stay resident
}

}  // namespace

double relative_output_error(const Tensor& w, const Tensor& w_hat, const Tensor& h) {
  const int64_t out = w.dim(0), in = w.dim(1);
  Tensor delta = Tensor::zeros(DType::F32, {out, in});
  for (int64_t i = 0; i < out * in; ++i) delta.data<float>()[i] = w.data<float>()[i] - w_hat.data<float>()[i];
  Tensor prod = Tensor::zeros(DType::F32, {out, in});
  auto quad = [&](const Tensor& a) {  // Σ (a H) ∘ a = tr(a H aᵀ)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(out), int(in), int(in), 1.0f,
                a.data<float>(), int(in), h.data<float>(), int(in), 0.0f, prod.data<float>(), int(in));
    double s = 0;
    for (int64_t i = 0; i < out * in; ++i) s += double(prod.data<float>()[i]) * a.data<float>()[i];
    return s;
  };
  const double base = quad(w);
  return base > 0 ? quad(delta) / base : 0.0;
}

namespace {

void check_group_sizes(const ModelSpec& spec, const Recipe& recipe, bool quantize_lm_head) {
  struct Matrix {
    std::string module;
    int64_t in;
    QuantFormat format;
    std::string format_name;  // describe(): matrices of one format share the suggestion
  };
  std::vector<Matrix> quantized;
  for (int64_t l = 0; l < spec.num_layers; ++l)
    for (const LinearSlot& slot : layer_linears(spec)) {
      const std::string module = spec.layer_prefix(l) + slot.name;
      const int64_t in = dim_size(spec, slot.in);
      if (const auto f = recipe.format_for(module)) quantized.push_back({module, in, *f, f->describe()});
    }
  if (quantize_lm_head)
    if (const auto f = recipe.format_for("lm_head")) quantized.push_back({"lm_head", spec.hidden_size, *f, f->describe()});
  // The suggested sizes must fit every matrix of that format, not just the one refused.
  for (const Matrix& m : quantized) {
    std::vector<int64_t> same_format_in;
    for (const Matrix& o : quantized)
      if (o.format_name == m.format_name) same_format_in.push_back(o.in);
    m.format.check_divides(m.in, m.module + ".weight", same_format_in);
  }
}

}  // namespace

void check_quantize_inputs(const ModelSpec& spec, const TensorSource& source, const Recipe& recipe,
                           const QuantizeOptions& o) {
  if (o.quantize_lm_head && (spec.tie_word_embeddings || !source.contains("lm_head.weight")))
    fail_input("--quantize-lm-head: this model ties lm_head to embed_tokens; quantizing it would "
               "quantize the embedding too. Drop --quantize-lm-head");
  const MethodPlan plan = parse_method(o.method);
  if (architecture(spec.arch).is_moe() && plan.scaling != ScalingMethod::None && !plan.gptq &&
      o.moe_starved != StarvedExperts::Rtn)
    fail_input("--moe-starved ", starved_experts_name(o.moe_starved), " chooses how GPTQ calibrates starved ",
               "experts; --method ", o.method, " quantizes without GPTQ and gives them RTN: use awq+gptq, ",
               "awq-joint+gptq or smoothquant+gptq, or drop --moe-starved");
  check_group_sizes(spec, recipe, o.quantize_lm_head);
}

namespace {

// One quantize_model run: the state its steps share. The steps read as the algorithm:
// per layer, its groups' statistics in true-sequential order, each group quantized from
// them, the layer's outputs onward; then the tail (final norm, lm_head).
class Pipeline {
 public:
  Pipeline(CausalLM& lm, const TensorSource& source, const CalibrationSet& calib, const Recipe& recipe,
           const QuantizeOptions& o, Exporter* exporter, Communicator& comm);
  QuantizeReport run();

 private:
  struct Layer {  // the decoder layer being quantized
    int64_t index;
    std::shared_ptr<const LayerTensors> src;  // as stored, from its owner
    LayerWeights w;                           // the forward's, quantized group by group
    ScaledLayer scaled;                       // the AWQ family's result, if one ran
  };

  void export_embedding();
  struct Marks {  // taken before a layer's fetch, so its read and broadcast count in its entry
    double t0;
    PhaseSeconds phases;
    TrafficCounters traffic;
  };
  void quantize_layer(int64_t l, std::shared_ptr<const LayerTensors> src, const Marks& start);
  bool staged_groups(Layer& L);  // true: h holds the layer's output
  void pass_groups(Layer& L);
  bool few_tokens(double routed) const;
  void warn_starved(const Layer& L, const GroupSlot& g, double routed) const;
  void quantize_group(Layer& L, const GroupSlot& g, HessianSum* acc, double routed = -1);
  double scaled_routed(const Layer& L, const GroupSlot& g) const;
  ModuleReport quantize_linear(Layer& L, const LinearSlot& slot, HessianSum* acc, GptqFactorCache& factor,
                               const QuantizeOptions& qo);
  RowParallelResult fit_rows(Layer& L, const LinearSlot& slot, HessianSum* acc, GptqFactorCache& factor,
                             const QuantizeOptions& qo, Communicator& comm);
  // MoE: this rank's routed experts fitted from their exchanged rows, then every rank's
  // results allgathered into fitted_ (collective); emit_expert_group applies and exports them.
  void fit_routed_experts(Layer& L, const RoutedCapture& capture);
  void fit_expert(Layer& L, int expert, const ExpertRows& rows, double routed, std::vector<FittedLinear>& out);
  HessianSum window_hessian(const Tensor& x, const std::vector<int64_t>& window_rows) const;
  FittedLinear fit_expert_linear(Layer& L, const LinearSlot& slot, HessianSum& acc, GptqFactorCache& factor,
                                 double routed, bool few);
  void emit_expert_group(Layer& L, const GroupSlot& g);
  void export_layer_dense(const Layer& L);
  void quantize_tail();
  ModuleReport quantize_lm_head();
  HessianSum hessian_for(const GroupSlot& g) const { return HessianSum(group_in_features(spec_, g), S_); }
  bool self_quantized() const { return plan_.scaling != ScalingMethod::None && !plan_.gptq; }

  CausalLM& lm_;
  const TensorSource& source_;
  const CalibrationSet& calib_;
  const Recipe& recipe_;
  const QuantizeOptions& o_;
  Exporter* exporter_;
  Communicator& comm_;
  Backend& be_;
  const ModelSpec& spec_;
  MethodPlan plan_;
  ScalingOptions scaling_;
  ExportNumerics numerics_;
  Range mine_;  // this rank's calibration windows
  int64_t S_, per_batch_;
  Tensor h_;  // the residual stream of this rank's windows, at the current layer's input
  QuantizeReport report_;
  std::unique_ptr<Communicator> self_;  // a world of one: an expert's owner fits it alone
  std::map<std::string, FittedLinear> fitted_;  // MoE: the current layer's routed experts, by module
};

Pipeline::Pipeline(CausalLM& lm, const TensorSource& source, const CalibrationSet& calib, const Recipe& recipe,
                   const QuantizeOptions& o, Exporter* exporter, Communicator& comm)
    : lm_(lm), source_(source), calib_(calib), recipe_(recipe), o_(o), exporter_(exporter), comm_(comm),
      be_(lm.backend()), spec_(lm.spec()), plan_(parse_method(o.method)), scaling_(o.scaling),
      numerics_(o.numerics), mine_(split_range(calib.n_samples, comm.size(), comm.rank())), S_(calib.seqlen),
      per_batch_(std::max<int64_t>(1, o.batch_tokens / calib.seqlen)), self_(make_self_communicator()) {
  scaling_.expert_min_tokens = double(o.expert_min_tokens);
  // AutoAWQ feeds the next layer the FP output; GPTQ-style methods the quantized one.
  scaling_.propagate_fp = o.propagate_fp.value_or(
      !plan_.gptq && (plan_.scaling == ScalingMethod::Awq || plan_.scaling == ScalingMethod::AwqDh));
  if (plan_.scaling != ScalingMethod::None) {  // folded norms are stored in the source's dtype
    const Tensor n0 = source.get(lm.layer_tensor(0, "input_layernorm.weight"));
    numerics_.norm_dtype = dtype_is_float(n0.dtype()) && n0.dtype() != DType::F64 ? n0.dtype() : DType::F32;
  }
  report_.method = o.method;
  report_.format = recipe.default_format().describe();
  report_.calib_samples = calib.n_samples;
  report_.calib_seqlen = calib.seqlen;
  report_.ranks = comm.size();
}

QuantizeReport Pipeline::run() {
  const double start = wall_seconds();
  check_quantize_inputs(spec_, source_, recipe_, o_);  // before hours of calibration
  // Segments an earlier run of this command finished (checkpoint.h): layers, then the tail.
  RunCheckpoint* const ck = o_.checkpoint;
  const int64_t done = ck ? ck->segments_done() : 0;
  const bool tail_done = done > spec_.num_layers;
  if (!tail_done) {  // this rank's calibration windows, embedded
    Tensor tokens = Tensor::zeros(DType::I32, {mine_.size() * S_});
    std::copy_n(calib_.tokens.data() + mine_.begin * S_, mine_.size() * S_, tokens.data<int32_t>());
    h_ = lm_.embed(tokens);
  }
  // Each layer's owner reads it (one layer ahead, on a thread) and broadcasts it.
  const LayerOwnership owners(spec_.num_layers, comm_.size());
  std::vector<std::string> prefixes;
  for (int64_t l = 0; l < spec_.num_layers; ++l) prefixes.push_back(spec_.layer_prefix(l));
  LayerFetcher fetcher(source_, prefixes, owners, comm_);
  // An MoE layer's routed experts are read by their owners only, when every one of them is
  // quantized (a skipped one would be needed as stored by every rank's forward) and no
  // scaling method runs (the AWQ family's scaler folds and fits every expert on every rank).
  const ExpertOwnership expert_owners(spec_.num_experts, comm_.size());
  bool experts_all_quantized = lm_.arch().is_moe() && plan_.scaling == ScalingMethod::None;
  for (const LinearSlot& slot : layer_linears(spec_))
    for (int64_t l = 0; l < spec_.num_layers && experts_all_quantized; ++l)
      if (routed_expert_of(lm_.layer_tensor(l, slot.name) + ".weight") >= 0)
        experts_all_quantized = recipe_.format_for(lm_.layer_tensor(l, slot.name)).has_value();
  if (experts_all_quantized)
    fetcher.read_privately([&expert_owners](const std::string& n) {
      const int64_t e = routed_expert_of(n);
      return e >= 0 ? expert_owners.owner(e) : -1;
    });
  if (!tail_done) fetcher.prefetch(0);
  if (done == 0) export_embedding();
  Progress progress("quantize", spec_.num_layers, "layers");
  for (int64_t l = 0; l < spec_.num_layers; ++l) {
    if (tail_done) {  // only the export is left: replay it
      ck->replay(l, lm_, nullptr, &report_.modules);
      continue;
    }
    const Marks start{wall_seconds(), phase_totals(), comm_.traffic()};
    std::shared_ptr<const LayerTensors> src = fetcher.fetch(l);
    fetcher.prefetch(l + 1);
    if (l < done) {
      // Replay its exports. h moves on as in the first run: through the recorded
      // (quantized, folded) weights, or the source's when the next layer was fed the
      // unquantized output (awq, awq-dh).
      LayerWeights w = lm_.load_layer(l, *src);
      ck->replay(l, lm_, scaling_.propagate_fp ? nullptr : &w, &report_.modules,
                 self_quantized() ? numerics_.weight_dtype : DType::F32);  // as quantize_linear's forward
      run_layer(lm_, l, w, h_, mine_.size(), S_, per_batch_, nullptr);
      continue;
    }
    quantize_layer(l, std::move(src), start);
    progress.update(l + 1);
  }
  progress.finish();
  if (tail_done)
    ck->replay(spec_.num_layers, lm_, nullptr, &report_.modules);
  else
    quantize_tail();
  report_.seconds = wall_seconds() - start;
  return std::move(report_);
}

void Pipeline::export_embedding() {
  for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"})
    if (source_.contains(name)) {
      check_finite(source_.get(name), name);
      source_.release(name);  // 2 GB each at 70B: read again when exported
    }
  export_dense_if_present(exporter_, source_, "model.embed_tokens.weight");
}

void Pipeline::quantize_layer(int64_t l, std::shared_ptr<const LayerTensors> src, const Marks& start) {
  stop_point(comm_);
  const size_t first_module = report_.modules.size();
  check_finite_prefix(*src, lm_.layer_tensor(l, ""));
  Layer L{l, src, lm_.load_layer(l, *src), {}};
  if (plan_.scaling != ScalingMethod::None) {
    PhaseTimer timer(Phase::Fit);  // AWQ-family statistics forwards, grids and fits
    L.scaled = scale_layer(lm_, l, L.w, h_, {mine_.size(), S_, per_batch_}, recipe_, plan_, scaling_, numerics_,
                           comm_);
  }
  bool h_advanced = false;  // h already holds the layer's (quantized) output
  if (o_.true_sequential && !self_quantized() && !o_.sequential_rerun && !lm_.arch().is_moe())
    h_advanced = staged_groups(L);
  else
    pass_groups(L);
  if (L.scaled.fp_output.defined())
    h_ = L.scaled.fp_output;  // AutoAWQ: the next layer sees the unquantized layer's output
  else if (!h_advanced)
    run_layer(lm_, l, L.w, h_, mine_.size(), S_, per_batch_, nullptr);  // quantized outputs onward
  export_layer_dense(L);
  report_.layers.push_back(layer_report(l, wall_seconds() - start.t0, src->bytes(), comm_.traffic() - start.traffic));
  report_.layers.back().phases = phase_totals() - start.phases;
  report_.layers.back().read_seconds = src->read_seconds();
  if (o_.checkpoint) o_.checkpoint->commit(l, {report_.modules.begin() + first_module, report_.modules.end()});
  const auto& last = report_.modules.back();
  log_debug("layer ", l, " done; ", last.module, " rel_error ", last.rel_error);
}

// Each group's inputs once, from the already-quantized earlier groups (staged_layer.h).
bool Pipeline::staged_groups(Layer& L) {
  StagedLayer staged(lm_, mine_.size(), S_, per_batch_, o_.sequential_cache_bytes);
  for (const GroupSlot& g : layer_groups(spec_)) {
    stop_point(comm_);  // a stop inside a layer drops it: it is redone on resume
    HessianSum acc = hessian_for(g);
    {
      PhaseTimer timer(Phase::Forward);
      staged.collect(g.group, L.w, h_, [&](const Tensor& x) {
        PhaseTimer hessian_timer(Phase::Hessian);
        acc.add(be_.download(x));
      });
    }
    quantize_group(L, g, &acc);
  }
  if (L.scaled.fp_output.defined()) return false;
  PhaseTimer timer(Phase::Forward);
  staged.finish(L.w, h_);
  return true;
}

// Statistics by layer forwards that stop after the last watched group. Without
// true-sequential every group sees the unquantized layer: one pass; the rerun path
// (o.sequential_rerun) re-runs the layer from its input for each group. MoE layers take
// this path too: a pass per kind; the pass of the experts' gate/up captures the rows their
// owners fit them from (gate, up and down: fit_routed_experts), the shared expert's
// groups are watched as a dense MLP's.
void Pipeline::pass_groups(Layer& L) {
  const std::vector<GroupSlot> groups = layer_groups(spec_);
  std::vector<std::vector<const GroupSlot*>> passes;
  const bool split = o_.true_sequential && !self_quantized();
  for (const auto& g : groups)
    if (passes.empty() || (split && g.group != passes.back().back()->group))
      passes.push_back({&g});
    else
      passes.back().push_back(&g);
  for (const auto& pass : passes) {
    stop_point(comm_);  // a stop inside a layer drops it: it is redone on resume
    std::map<GroupId, HessianSum> hessians;
    HessianObserver observer(be_);
    RoutedCapture capture{spec_.hidden_size, {}, std::vector<std::vector<int64_t>>(size_t(spec_.num_experts))};
    const bool experts_here = std::any_of(pass.begin(), pass.end(), [](const GroupSlot* g) {
      return is_routed_expert(*g) && g->group == LinearGroup::GateUp;
    });
    if (!self_quantized()) {
      for (const GroupSlot* g : pass)
        if (!is_routed_expert(*g)) {
          auto [it, _] = hessians.emplace(g->id(), hessian_for(*g));
          observer.watch(g->id(), &it->second);
        }
      if (experts_here) observer.capture(&capture);
      if (observer.watching()) run_layer(lm_, L.index, L.w, h_, mine_.size(), S_, per_batch_, &observer);
    }
    if (experts_here && !self_quantized()) fit_routed_experts(L, capture);
    for (const GroupSlot* g : pass)
      if (!self_quantized())
        is_routed_expert(*g) ? emit_expert_group(L, *g) : quantize_group(L, *g, &hessians.at(g->id()));
      else  // the AWQ family fitted every expert in the scaler, from its own routed counts
        quantize_group(L, *g, nullptr, scaled_routed(L, *g));
  }
}

double Pipeline::scaled_routed(const Layer& L, const GroupSlot& g) const {
  const auto r = L.scaled.routed.find(g.expert);
  return r == L.scaled.routed.end() ? -1.0 : r->second;
}

// Collective. The tokens routed to each expert over all ranks, --moe-starved all-tokens'
// experts, the rows to their owners; each rank fits the experts it owns, then every rank
// receives every fitted expert.
void Pipeline::fit_routed_experts(Layer& L, const RoutedCapture& capture) {
  const int64_t E = spec_.num_experts;
  std::vector<double> routed(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) routed[size_t(e)] = double(capture.rows[size_t(e)].size());
  comm_.allreduce_sum(routed.data(), E);
  std::vector<bool> all_tokens(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e)
    all_tokens[size_t(e)] =
        o_.moe_starved == StarvedExperts::AllTokens && routed[size_t(e)] < double(o_.expert_min_tokens);
  const ExpertOwnership owners(E, comm_.size());
  std::map<int, ExpertRows> mine;
  {
    PhaseTimer timer(Phase::Allreduce);  // the rows' exchange stands in for the Hessians' allreduce
    mine = exchange_routed_rows(capture, owners, all_tokens, calib_.n_samples, S_, comm_);
  }
  std::vector<FittedLinear> fitted;
  for (const auto& [e, rows] : mine) fit_expert(L, e, rows, routed[size_t(e)], fitted);
  std::vector<std::vector<uint8_t>> every;
  {
    PhaseTimer timer(Phase::Allreduce);  // the results' allgather
    every = comm_.allgather_bytes(serialize_fitted(fitted), Traffic::Results);
  }
  fitted_.clear();
  for (const auto& bytes : every)
    for (FittedLinear& f : deserialize_fitted(bytes)) {
      if (!f.skipped) f.q.format = *recipe_.format_for(f.module);
      const std::string module = f.module;
      fitted_[module] = std::move(f);
    }
}

// One expert on its owner: gate/up's Hessian from its rows (a Gram matrix per window),
// gate and up fitted, the expert run on the same rows for down's Hessian, down fitted.
void Pipeline::fit_expert(Layer& L, int expert, const ExpertRows& rows, double routed,
                          std::vector<FittedLinear>& out) {
  const GroupSlot* gate_up = nullptr;
  const GroupSlot* down = nullptr;
  const std::vector<GroupSlot> groups = layer_groups(spec_);
  for (const GroupSlot& g : groups)
    if (g.expert == expert) (g.group == LinearGroup::GateUp ? gate_up : down) = &g;
  QS_ASSERT(gate_up && down, "expert ", expert, " has no gate_up/down group");
  const bool few = few_tokens(routed);
  const ExpertWeights& ex = L.w.experts[size_t(expert)];
  const GroupInput in = lm_.expert_input(ex, be_.upload(rows.x));
  Tensor act;  // down's input; without true-sequential, from the unquantized gate/up
  if (!o_.true_sequential) act = lm_.expert_activation(ex, in, spec_.moe_intermediate_size);
  {
    HessianSum acc = window_hessian(be_.download(in.seen()), rows.window_rows);
    GptqFactorCache factor;
    for (const LinearSlot& slot : gate_up->linears) out.push_back(fit_expert_linear(L, slot, acc, factor, routed, few));
  }
  if (o_.true_sequential) act = lm_.expert_activation(ex, in, spec_.moe_intermediate_size);
  HessianSum acc = window_hessian(be_.download(act), rows.window_rows);
  GptqFactorCache factor;
  for (const LinearSlot& slot : down->linears) out.push_back(fit_expert_linear(L, slot, acc, factor, routed, few));
}

// Σ xxᵀ over rows that come window by window (window_rows[w] rows of window w): each
// window's Gram matrix alone, as HessianSum sums a rank's windows, so the owner's Hessian
// is the same whichever ranks the windows came from.
HessianSum Pipeline::window_hessian(const Tensor& x, const std::vector<int64_t>& window_rows) const {
  PhaseTimer timer(Phase::Hessian);
  HessianSum acc(x.dim(1), S_);
  int64_t at = 0;
  for (int64_t n : window_rows) {
    if (n > 0) acc.add(x.rows(at, at + n));  // n <= S_: one window
    at += n;
  }
  QS_ASSERT(at == x.dim(0), "window_hessian: ", at, " of ", x.dim(0), " rows");
  acc.allreduce(*self_);
  return acc;
}

FittedLinear Pipeline::fit_expert_linear(Layer& L, const LinearSlot& slot, HessianSum& acc, GptqFactorCache& factor,
                                         double routed, bool few) {
  const std::string module = lm_.layer_tensor(L.index, slot.name);
  const std::optional<QuantFormat> format = recipe_.format_for(module);
  FittedLinear f;
  f.module = module;
  f.report = {module, format ? format->describe() : "skipped", 0, 0, 0, 0};
  f.report.routed_tokens = int64_t(routed);
  f.skipped = !format;
  if (f.skipped) return f;
  const double t0 = wall_seconds();
  QuantizeOptions rtn_o = o_;
  rtn_o.method = "rtn";
  RowParallelResult qr = fit_rows(L, slot, &acc, factor, few ? rtn_o : o_, *self_);
  f.report.rel_error = qr.rel_error;
  f.report.gptq_loss = qr.loss;
  f.report.damp_escalations = qr.escalations;
  f.report.rtn_fallback = few;
  f.report.seconds = wall_seconds() - t0;
  linear_of(L.w, slot).weight = be_.upload(qr.w_hat);  // down's Hessian reads the quantized gate/up
  f.q = std::move(qr.q);
  return f;
}

// Every rank: the group's fitted Linears into the forward's weights, the exporter and the
// report, in the order a single rank makes those calls.
void Pipeline::emit_expert_group(Layer& L, const GroupSlot& g) {
  for (const LinearSlot& slot : g.linears) {
    stop_point(comm_);
    const std::string module = lm_.layer_tensor(L.index, slot.name);
    const FittedLinear& f = fitted_.at(module);
    if (&slot == &g.linears.front()) warn_starved(L, g, double(f.report.routed_tokens));
    if (f.skipped) {
      export_dense_if_present(exporter_, *L.src, module + ".weight");
    } else {
      linear_of(L.w, slot).weight = be_.upload(f.q.dequantize());
      PhaseTimer timer(Phase::Export);
      if (exporter_) exporter_->add_quantized(module, f.q);
    }
    export_dense_if_present(exporter_, *L.src, module + ".bias");
    report_.modules.push_back(f.report);
  }
  test_kill_point(str_cat("layer-", L.index, "-", group_id_name(g.id())));  // mid-layer, for the resume tests
}

// A starved expert (under o.expert_min_tokens routed tokens) quantized with RTN, per
// o.moe_starved.
bool Pipeline::few_tokens(double routed) const {
  return routed < double(o_.expert_min_tokens) &&
         (o_.moe_starved == StarvedExperts::Rtn || (o_.moe_starved == StarvedExperts::Routed && routed == 0));
}

void Pipeline::warn_starved(const Layer& L, const GroupSlot& g, double routed) const {
  if (routed >= double(o_.expert_min_tokens)) return;
  if (few_tokens(routed))
    log_warn("layer ", L.index, " ", group_id_name(g.id()), ": ", int64_t(routed), " calibration tokens routed (< ",
             o_.expert_min_tokens, "): its Linears are quantized with RTN; more calibration data would give it ",
             self_quantized() ? o_.method : "GPTQ");
  else
    log_warn("layer ", L.index, " ", group_id_name(g.id()), ": ", int64_t(routed), " calibration tokens routed (< ",
             o_.expert_min_tokens, "): GPTQ on ",
             o_.moe_starved == StarvedExperts::AllTokens ? "every token of the layer" : "those tokens");
}

// Quantizes group g's Linears with its Hessian (null when self-quantized), the output
// rows split over ranks; later groups then see their quantized outputs. routed: a
// self-quantized expert's calibration tokens over all ranks (-1 for every other group;
// the scaler quantized a starved one with RTN).
void Pipeline::quantize_group(Layer& L, const GroupSlot& g, HessianSum* acc, double routed) {
  if (routed >= 0) warn_starved(L, g, routed);
  if (acc) allreduce_hessian(*acc, comm_);
  GptqFactorCache factor;  // one inverse factor for the group's Linears (same H)
  for (const LinearSlot& slot : g.linears) {
    stop_point(comm_);
    ModuleReport mr = quantize_linear(L, slot, acc, factor, o_);
    mr.routed_tokens = int64_t(routed);
    mr.rtn_fallback = routed >= 0 && few_tokens(routed) && mr.format != "skipped";
    export_dense_if_present(exporter_, *L.src, lm_.layer_tensor(L.index, slot.name) + ".bias");
    report_.modules.push_back(std::move(mr));
  }
  test_kill_point(str_cat("layer-", L.index, "-", group_id_name(g.id())));  // mid-layer, for the resume tests
}

ModuleReport Pipeline::quantize_linear(Layer& L, const LinearSlot& slot, HessianSum* acc, GptqFactorCache& factor,
                                       const QuantizeOptions& qo) {
  const std::string module = lm_.layer_tensor(L.index, slot.name);
  const std::string weight_name = module + ".weight";
  const std::optional<QuantFormat> format = recipe_.format_for(module);
  ModuleReport mr{module, format ? format->describe() : "skipped", 0, 0, 0, 0};
  LinearWeights& lw = linear_of(L.w, slot);
  if (!format) {
    export_dense_if_present(exporter_, *L.src, weight_name);
    return mr;
  }
  if (self_quantized()) {
    const ScaledModule& sm = L.scaled.quantized.at(module);
    mr.rel_error = sm.rel_error;
    lw.weight = be_.upload(dequantize_exported(sm.q, numerics_));
    PhaseTimer timer(Phase::Export);
    if (exporter_) exporter_->add_quantized(module, sm.q);
    return mr;
  }
  const double t0 = wall_seconds();
  RowParallelResult qr = fit_rows(L, slot, acc, factor, qo, comm_);
  mr.rel_error = qr.rel_error;
  mr.gptq_loss = qr.loss;
  mr.damp_escalations = qr.escalations;
  lw.weight = be_.upload(qr.w_hat);  // later groups see quantized outputs
  {
    PhaseTimer timer(Phase::Export);
    if (exporter_) exporter_->add_quantized(module, qr.q);
  }
  mr.seconds = wall_seconds() - t0;
  return mr;
}

// The Linear's quantized rows: split over `comm`'s ranks and allgathered (row_parallel.h);
// a world of one for an expert's owner.
RowParallelResult Pipeline::fit_rows(Layer& L, const LinearSlot& slot, HessianSum* acc, GptqFactorCache& factor,
                                     const QuantizeOptions& qo, Communicator& comm) {
  const std::string weight_name = lm_.layer_tensor(L.index, slot.name) + ".weight";
  const std::string module = lm_.layer_tensor(L.index, slot.name);
  const std::optional<QuantFormat> format = recipe_.format_for(module);
  LinearWeights& lw = linear_of(L.w, slot);
  // The layer's weights as the forward holds them: scaled if a scaling method ran.
  const Tensor w_orig = plan_.scaling != ScalingMethod::None ? be_.download(lw.weight).to_f32()
                                                             : L.src->get(weight_name).to_f32();
  const auto fixed_it = L.scaled.static_groups.find(module);
  const std::vector<GroupParams>* fixed = fixed_it == L.scaled.static_groups.end() ? nullptr : &fixed_it->second;
  // Output rows split over ranks, results allgathered (row_parallel.h); fixed group
  // parameters (awq-joint+gptq) are sliced to this rank's rows.
  RowParallelResult qr = quantize_rows_parallel(
      w_orig, &acc->sum(), *format,
      [&](const Tensor& rows, const Scheme& s) {
        std::vector<GroupParams> mine_fixed;
        if (fixed) {
          const int64_t out = w_orig.dim(0), ng = int64_t(fixed->size()) / out;
          const Range r = row_range(out, comm.size(), comm.rank());
          QS_ASSERT(r.size() == rows.dim(0), "row split of ", weight_name);
          mine_fixed.assign(fixed->begin() + r.begin * ng, fixed->begin() + r.end * ng);
        }
        return quantize_weight(be_, rows, &acc->sum(), s, qo, weight_name, fixed ? &mine_fixed : nullptr, &factor);
      },
      comm);
  return qr;
}

// The layer's tensors that are not quantized: norms (folded by a scaling method, then
// rounded to the source dtype) and the MoE router / shared expert gate (scaled with the
// experts' inputs by a scaling method, as awq_layer.cpp rounded them: the source dtype).
void Pipeline::export_layer_dense(const Layer& L) {
  for (const NormSlot& n : lm_.arch().norms) {
    const std::string full = lm_.layer_tensor(L.index, n.name) + ".weight";
    if (plan_.scaling == ScalingMethod::None || !exporter_)
      export_dense_if_present(exporter_, *L.src, full);
    else
      exporter_->add_dense(full, to_dtype(be_.download(L.w.*(n.member)), L.src->get(full).dtype()));
  }
  for (const DenseLinearSlot& d : dense_linears(spec_)) {
    const std::string full = lm_.layer_tensor(L.index, d.name) + ".weight";
    if (plan_.scaling == ScalingMethod::None || !exporter_)
      export_dense_if_present(exporter_, *L.src, full);
    else
      exporter_->add_dense(full, to_dtype(be_.download((L.w.*(d.member)).weight), L.src->get(full).dtype()));
  }
}

void Pipeline::quantize_tail() {
  stop_point(comm_);
  const size_t first_tail_module = report_.modules.size();
  export_dense_if_present(exporter_, source_, "model.norm.weight");
  if (!o_.quantize_lm_head) {
    if (!spec_.tie_word_embeddings) export_dense_if_present(exporter_, source_, "lm_head.weight");
  } else {
    report_.modules.push_back(quantize_lm_head());
  }
  if (o_.checkpoint)
    o_.checkpoint->commit(spec_.num_layers, {report_.modules.begin() + first_tail_module, report_.modules.end()});
}

ModuleReport Pipeline::quantize_lm_head() {
  // lm_head's input: the final-norm hidden states of every calibration token.
  const Tensor norm_w = be_.upload(source_.get("model.norm.weight"));
  HessianSum acc(spec_.hidden_size, S_);
  for (int64_t w0 = 0; w0 < mine_.size(); w0 += per_batch_) {
    const int64_t B = std::min(per_batch_, mine_.size() - w0);
    Tensor x = copy_rows(be_, h_.rows(w0 * S_, (w0 + B) * S_));
    be_.rmsnorm(x, norm_w, float(spec_.rms_norm_eps), x);
    lm_.quantize_input("lm_head", x);  // --act-format: what the quantized lm_head reads
    acc.add(be_.download(x));
  }
  allreduce_hessian(acc, comm_);
  const std::optional<QuantFormat> format = recipe_.format_for("lm_head");
  // Every rank reads lm_head here; it is quantized once per run.
  ModuleReport mr{"lm_head", format ? format->describe() : "skipped", 0, 0, 0, 0};
  if (!format) {
    export_dense_if_present(exporter_, source_, "lm_head.weight");
    return mr;
  }
  const double t0 = wall_seconds();
  const Tensor w_orig = source_.get("lm_head.weight").to_f32();
  // GPTQ rows are independent given H: each rank's (vocab-sized) row block is quantized
  // in chunks so memory stays bounded, then stitched. The tensor scale (NVFP4) is the
  // whole weight's, fixed by quantize_rows_parallel.
  GptqFactorCache factor;  // every row chunk reads the same H: factored once
  auto chunked = [&](const Tensor& rows, const Scheme& scheme) {
    const int64_t V = rows.dim(0);
    const int64_t chunk = std::max<int64_t>(1, o_.lm_head_chunk_rows);
    QuantizedResult all;
    for (int64_t r0 = 0; r0 < V; r0 += chunk) {
      const int64_t r1 = std::min(V, r0 + chunk);
      Tensor part = Tensor::zeros(DType::F32, {r1 - r0, rows.dim(1)});
      std::memcpy(part.raw(), rows.rows(r0, r1).raw(), part.nbytes());
      QuantizedResult qr = quantize_weight(be_, part, &acc.sum(), scheme, o_, "lm_head.weight", nullptr, &factor);
      all.loss += qr.loss;
      all.escalations += qr.escalations;
      all.damp_abs = qr.damp_abs;  // one H for every chunk (negative for RTN)
      if (r0 == 0) {
        all.q = std::move(qr.q);
      } else {
        all.q.out_features += qr.q.out_features;
        all.q.codes.insert(all.q.codes.end(), qr.q.codes.begin(), qr.q.codes.end());
        all.q.scales.insert(all.q.scales.end(), qr.q.scales.begin(), qr.q.scales.end());
        all.q.zeros.insert(all.q.zeros.end(), qr.q.zeros.begin(), qr.q.zeros.end());
      }
    }
    return all;
  };
  RowParallelResult all = quantize_rows_parallel(w_orig, &acc.sum(), *format, chunked, comm_);
  mr.gptq_loss = all.loss;
  mr.damp_escalations = all.escalations;
  mr.rel_error = all.rel_error;
  if (exporter_) exporter_->add_quantized("lm_head", all.q);
  mr.seconds = wall_seconds() - t0;
  return mr;
}

}  // namespace

QuantizeReport quantize_model(CausalLM& lm, const TensorSource& source, const CalibrationSet& calib,
                              const Recipe& recipe, const QuantizeOptions& o, Exporter* exporter,
                              Communicator& comm) {
  return Pipeline(lm, source, calib, recipe, o, exporter, comm).run();
}

StarvedExperts parse_starved_experts(const std::string& name) {
  for (StarvedExperts s : {StarvedExperts::Rtn, StarvedExperts::AllTokens, StarvedExperts::Routed})
    if (name == starved_experts_name(s)) return s;
  fail_input("--moe-starved '", name, "' is not one of rtn, all-tokens, routed");
}

const char* starved_experts_name(StarvedExperts s) {
  switch (s) {
    case StarvedExperts::Rtn: return "rtn";
    case StarvedExperts::AllTokens: return "all-tokens";
    case StarvedExperts::Routed: return "routed";
  }
  return "?";
}

}  // namespace qshard
