#include "pipeline/quantize.h"

#include <cblas.h>

#include <cstring>
#include <map>

#include "core/error.h"
#include "core/log.h"
#include "dist/partition.h"
#include "pipeline/finite_check.h"

namespace qshard {

namespace {

struct LinearSlot {
  const char* name;  // "self_attn.q_proj"
  LinearWeights LayerWeights::*member;
};

struct GroupSpec {
  LinearGroup group;
  std::vector<LinearSlot> linears;
};

const std::vector<GroupSpec>& layer_groups() {
  static const std::vector<GroupSpec> groups = {
      {LinearGroup::QKV, {{"self_attn.q_proj", &LayerWeights::q}, {"self_attn.k_proj", &LayerWeights::k},
                          {"self_attn.v_proj", &LayerWeights::v}}},
      {LinearGroup::O, {{"self_attn.o_proj", &LayerWeights::o}}},
      {LinearGroup::GateUp, {{"mlp.gate_proj", &LayerWeights::gate}, {"mlp.up_proj", &LayerWeights::up}}},
      {LinearGroup::Down, {{"mlp.down_proj", &LayerWeights::down}}},
  };
  return groups;
}

// Accumulates the Hessian of the linear groups it is asked to watch.
class HessianObserver final : public LayerObserver {
 public:
  explicit HessianObserver(Backend& be) : be_(be) {}
  void watch(LinearGroup g, HessianAccumulator* acc) { targets_[g] = acc; }
  void on_linear_input(int64_t, LinearGroup g, const Tensor& x) override {
    auto it = targets_.find(g);
    if (it != targets_.end()) it->second->add(be_.download(x));
  }
  bool stop_after(LinearGroup g) const override { return !targets_.empty() && g == targets_.rbegin()->first; }

 private:
  Backend& be_;
  std::map<LinearGroup, HessianAccumulator*> targets_;
};

Tensor copy_rows(Backend& be, const Tensor& t) { return be.upload(be.download(t)); }

void allreduce_hessian(HessianAccumulator& acc, Communicator& comm) {
  if (comm.size() == 1) return;
  comm.allreduce_sum(acc.sum().data<float>(), acc.sum().numel());
}

// Runs the current layer over every calibration batch: with an observer to collect
// statistics (h untouched), or without one to advance h to the layer's outputs.
void run_layer(CausalLM& lm, int64_t layer, const LayerWeights& w, Tensor& h, int64_t windows,
               int64_t seqlen, int64_t per_batch, HessianObserver* observer) {
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

struct QuantizedResult {
  QuantizedLinear q;
  double loss = 0;
  int escalations = 0;
};

QuantizedResult quantize_weight(const Tensor& w, const Tensor* hessian, const QuantFormat& format,
                                const QuantizeOptions& o, const std::string& name) {
  const auto scheme = Scheme::make(format);
  format.check_divides(w.dim(1), name);
  QuantizedResult r;
  if (o.method == "rtn") {
    r.q = rtn_quantize(w, *scheme, o.clip, name);
  } else {
    GptqResult g = gptq_quantize(w, *hessian, *scheme, o.gptq, name);
    r.q = std::move(g.q);
    r.loss = g.loss;
    r.escalations = g.damp_escalations;
  }
  return r;
}

void export_dense_if_present(Exporter* ex, const TensorSource& src, const std::string& name) {
  if (ex && src.contains(name)) ex->add_dense(name, src.get(name));
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

QuantizeReport quantize_model(CausalLM& lm, const TensorSource& source, const CalibrationSet& calib,
                              const Recipe& recipe, const QuantizeOptions& o, Exporter* exporter,
                              Communicator& comm) {
  const double start = wall_seconds();
  const ModelSpec& spec = lm.spec();
  Backend& be = lm.backend();
  if (o.method != "gptq" && o.method != "rtn")
    fail_input("--method ", o.method, " is not supported here (gptq, rtn)");
  if (o.quantize_lm_head && (spec.tie_word_embeddings || !source.contains("lm_head.weight")))
    fail_input("--quantize-lm-head: this model ties lm_head to embed_tokens; quantizing it would "
               "quantize the embedding too. Drop --quantize-lm-head");

  // Refuse shapes that do not divide into groups before hours of calibration.
  for (int64_t l = 0; l < spec.num_layers; ++l)
    for (const auto& g : layer_groups())
      for (const LinearSlot& slot : g.linears) {
        const std::string module = lm.layer_tensor(l, slot.name);
        const int64_t in = g.group == LinearGroup::O      ? spec.q_dim()
                           : g.group == LinearGroup::Down ? spec.intermediate_size
                                                          : spec.hidden_size;
        if (const auto f = recipe.format_for(module)) f->check_divides(in, module + ".weight");
      }
  if (o.quantize_lm_head)
    if (const auto f = recipe.format_for("lm_head")) f->check_divides(spec.hidden_size, "lm_head.weight");

  QuantizeReport report;
  report.method = o.method;
  report.format = recipe.default_format().describe();
  report.calib_samples = calib.n_samples;
  report.calib_seqlen = calib.seqlen;
  report.ranks = comm.size();

  // This rank's calibration windows, embedded.
  const Range mine = split_range(calib.n_samples, comm.size(), comm.rank());
  const int64_t S = calib.seqlen;
  const int64_t per_batch = std::max<int64_t>(1, o.batch_tokens / S);
  Tensor tokens = Tensor::zeros(DType::I32, {mine.size() * S});
  std::copy_n(calib.tokens.data() + mine.begin * S, mine.size() * S, tokens.data<int32_t>());
  // Segments an earlier run of this command finished (checkpoint.h): layers, then the tail.
  RunCheckpoint* const ck = o.checkpoint;
  const int64_t done = ck ? ck->segments_done() : 0;
  const bool tail_done = done > spec.num_layers;
  Tensor h = tail_done ? Tensor() : lm.embed(tokens);

  if (done == 0) {
    for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"})
      if (source.contains(name)) check_finite(source.get(name), name);
    export_dense_if_present(exporter, source, "model.embed_tokens.weight");
  }
  Progress progress("quantize", spec.num_layers, "layers");
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    if (l < done) {  // replay its exports; its recorded weights carry h forward
      LayerWeights w = tail_done ? LayerWeights() : lm.load_layer(l);
      ck->replay(l, lm, tail_done ? nullptr : &w, &report.modules);
      if (!tail_done) run_layer(lm, l, w, h, mine.size(), S, per_batch, nullptr);
      continue;
    }
    const size_t first_module = report.modules.size();
    check_finite_prefix(source, lm.layer_tensor(l, ""));
    LayerWeights w = lm.load_layer(l);
    // Without true-sequential every group sees the unquantized layer: one pass.
    const auto& groups = layer_groups();
    std::vector<std::vector<const GroupSpec*>> passes;
    if (o.true_sequential)
      for (const auto& g : groups) passes.push_back({&g});
    else
      passes.push_back({&groups[0], &groups[1], &groups[2], &groups[3]});

    for (const auto& pass : passes) {
      std::map<LinearGroup, HessianAccumulator> hessians;
      HessianObserver observer(be);
      for (const GroupSpec* g : pass) {
        const int64_t in = (w.*(g->linears[0].member)).weight.dim(1);
        auto [it, _] = hessians.emplace(g->group, HessianAccumulator(in));
        observer.watch(g->group, &it->second);
      }
      run_layer(lm, l, w, h, mine.size(), S, per_batch, &observer);
      for (const GroupSpec* g : pass) {
        HessianAccumulator& acc = hessians.at(g->group);
        allreduce_hessian(acc, comm);
        for (const LinearSlot& slot : g->linears) {
          const std::string module = lm.layer_tensor(l, slot.name);
          const std::string weight_name = module + ".weight";
          const std::optional<QuantFormat> format = recipe.format_for(module);
          ModuleReport mr{module, format ? format->describe() : "skipped", 0, 0, 0, 0};
          if (!format) {
            export_dense_if_present(exporter, source, weight_name);
          } else {
            const double t0 = wall_seconds();
            const Tensor w_orig = source.get(weight_name).to_f32();
            QuantizedResult qr = quantize_weight(w_orig, &acc.sum(), *format, o, weight_name);
            const Tensor w_hat = qr.q.dequantize();
            mr.rel_error = relative_output_error(w_orig, w_hat, acc.sum());
            mr.gptq_loss = qr.loss;
            mr.damp_escalations = qr.escalations;
            (w.*(slot.member)).weight = be.upload(w_hat);  // later groups see quantized outputs
            if (exporter) exporter->add_quantized(module, qr.q);
            mr.seconds = wall_seconds() - t0;
          }
          export_dense_if_present(exporter, source, module + ".bias");
          report.modules.push_back(std::move(mr));
        }
      }
    }
    run_layer(lm, l, w, h, mine.size(), S, per_batch, nullptr);  // quantized outputs onward
    export_dense_if_present(exporter, source, lm.layer_tensor(l, "input_layernorm.weight"));
    export_dense_if_present(exporter, source, lm.layer_tensor(l, "post_attention_layernorm.weight"));
    if (ck) ck->commit(l, {report.modules.begin() + first_module, report.modules.end()});
    progress.update(l + 1);
    const auto& last = report.modules.back();
    log_debug("layer ", l, " done; ", last.module, " rel_error ", last.rel_error);
  }
  progress.finish();
  if (tail_done) {
    ck->replay(spec.num_layers, lm, nullptr, &report.modules);
    report.seconds = wall_seconds() - start;
    return report;
  }
  const size_t first_tail_module = report.modules.size();
  export_dense_if_present(exporter, source, "model.norm.weight");

  if (!o.quantize_lm_head) {
    if (!spec.tie_word_embeddings) export_dense_if_present(exporter, source, "lm_head.weight");
  } else {
    // lm_head's input: the final-norm hidden states of every calibration token.
    const Tensor norm_w = be.upload(source.get("model.norm.weight"));
    HessianAccumulator acc(spec.hidden_size);
    for (int64_t w0 = 0; w0 < mine.size(); w0 += per_batch) {
      const int64_t B = std::min(per_batch, mine.size() - w0);
      Tensor x = copy_rows(be, h.rows(w0 * S, (w0 + B) * S));
      be.rmsnorm(x, norm_w, float(spec.rms_norm_eps), x);
      acc.add(be.download(x));
    }
    allreduce_hessian(acc, comm);
    const std::optional<QuantFormat> format = recipe.format_for("lm_head");
    ModuleReport mr{"lm_head", format ? format->describe() : "skipped", 0, 0, 0, 0};
    if (!format) {
      export_dense_if_present(exporter, source, "lm_head.weight");
    } else {
      const double t0 = wall_seconds();
      const Tensor w_orig = source.get("lm_head.weight").to_f32();
      // GPTQ rows are independent given H: quantize the (vocab-sized) rows in chunks
      // so memory stays bounded, then stitch. NVFP4's tensor scale must be shared, so
      // it is quantized whole.
      const int64_t V = w_orig.dim(0);
      const int64_t chunk = format->family == FormatFamily::NVFP4 ? V : std::max<int64_t>(1, o.lm_head_chunk_rows);
      QuantizedLinear all;
      for (int64_t r0 = 0; r0 < V; r0 += chunk) {
        const int64_t r1 = std::min(V, r0 + chunk);
        Tensor part = Tensor::zeros(DType::F32, {r1 - r0, w_orig.dim(1)});
        std::memcpy(part.raw(), w_orig.rows(r0, r1).raw(), part.nbytes());
        QuantizedResult qr = quantize_weight(part, &acc.sum(), *format, o, "lm_head.weight");
        mr.gptq_loss += qr.loss;
        mr.damp_escalations += qr.escalations;
        if (r0 == 0) {
          all = std::move(qr.q);
        } else {
          all.out_features += qr.q.out_features;
          all.codes.insert(all.codes.end(), qr.q.codes.begin(), qr.q.codes.end());
          all.scales.insert(all.scales.end(), qr.q.scales.begin(), qr.q.scales.end());
          all.zeros.insert(all.zeros.end(), qr.q.zeros.begin(), qr.q.zeros.end());
        }
      }
      mr.rel_error = relative_output_error(w_orig, all.dequantize(), acc.sum());
      if (exporter) exporter->add_quantized("lm_head", all);
      mr.seconds = wall_seconds() - t0;
    }
    report.modules.push_back(std::move(mr));
  }
  if (ck) ck->commit(spec.num_layers, {report.modules.begin() + first_tail_module, report.modules.end()});
  report.seconds = wall_seconds() - start;
  return report;
}

}  // namespace qshard
