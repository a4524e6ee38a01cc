#include "model/decoder.h"

#include <cmath>

#include "core/error.h"
#include "core/log.h"

namespace qshard {

namespace {

struct ExpectedTensor {
  std::string name;
  Shape shape;
};

// The fake-quantized copy of x that the Linears `ls` read, or an undefined Tensor when
// none of them quantizes its input. Linears sharing an input share one format.
Tensor quantized_input(Backend& be, const Tensor& x, std::initializer_list<const LinearWeights*> ls) {
  ActFormat f = ActFormat::None;
  for (const LinearWeights* l : ls)
    if (l->act != ActFormat::None) {
      QS_ASSERT(f == ActFormat::None || f == l->act, "Linears sharing an input have activation "
                "formats ", act_format_name(f), " and ", act_format_name(l->act));
      f = l->act;
    }
  if (f == ActFormat::None) return {};
  Tensor y = be.zeros(DType::F32, x.shape());
  be.fake_quant_activations(x, f, y);
  return y;
}

// What one Linear reads: its quantized input if it has an act format, else x.
const Tensor& input_of(const LinearWeights& lw, const Tensor& x, const Tensor& xq) {
  return lw.act != ActFormat::None ? xq : x;
}

const Tensor* bias_of(const LinearWeights& lw) { return lw.bias.defined() ? &lw.bias : nullptr; }

void check_tensor(const TensorSource& w, const ExpectedTensor& e) {
  const Tensor t = w.get(e.name);
  if (t.shape() != e.shape)
    fail_input("tensor ", e.name, " has shape ", shape_str(t.shape()), " but config.json implies ",
               shape_str(e.shape), ": the weights do not belong to this config.json");
  if (!dtype_is_float(t.dtype()))
    fail_input("tensor ", e.name, " has dtype ", dtype_name(t.dtype()),
               "; expected BF16, F16 or F32 weights (is this checkpoint already quantized?)");
}

}  // namespace

CausalLM::CausalLM(ModelSpec spec, const TensorSource& weights, Backend& backend)
    : spec_(std::move(spec)), weights_(weights), backend_(backend) {
  check_shapes();
}

std::string CausalLM::layer_tensor(int64_t layer, const std::string& suffix) const {
  return spec_.layer_prefix(layer) + suffix;
}

void CausalLM::check_shapes() const {
  const ModelSpec& s = spec_;
  std::vector<ExpectedTensor> expect = {
      {"model.embed_tokens.weight", {s.vocab_size, s.hidden_size}},
      {"model.norm.weight", {s.hidden_size}},
  };
  if (!s.tie_word_embeddings && weights_.contains("lm_head.weight"))
    expect.push_back({"lm_head.weight", {s.vocab_size, s.hidden_size}});
  else if (!s.tie_word_embeddings)
    fail_input("lm_head.weight is missing and config.json does not set tie_word_embeddings: "
               "the checkpoint is incomplete");
  const Architecture& a = arch();
  const std::vector<LinearSlot> linears = layer_linears(s);
  for (int64_t l = 0; l < s.num_layers; ++l) {
    auto add = [&](const std::string& suffix, Shape shape) { expect.push_back({layer_tensor(l, suffix), shape}); };
    for (const NormSlot& n : a.norms) add(str_cat(n.name, ".weight"), {dim_size(s, n.size)});
    for (const DenseLinearSlot& d : dense_linears(s)) add(str_cat(d.name, ".weight"), {dim_size(s, d.out), dim_size(s, d.in)});
    for (const LinearSlot& lin : linears) {
      const Shape shape = linear_shape(s, lin);
      add(str_cat(lin.name, ".weight"), shape);
      if (has_bias(s, lin)) add(str_cat(lin.name, ".bias"), {shape[0]});
    }
  }
  for (const auto& e : expect) check_tensor(weights_, e);
}

LayerWeights CausalLM::load_layer(int64_t layer) const { return load_layer(layer, weights_); }

LayerWeights CausalLM::load_layer(int64_t layer, const TensorSource& from) const {
  auto up = [&](const std::string& suffix) { return backend_.upload(from.get(layer_tensor(layer, suffix))); };
  auto linear = [&](const std::string& name, bool has_bias) {
    LinearWeights lw{up(name + ".weight"), {}};
    if (has_bias) lw.bias = up(name + ".bias");
    lw.act = act_format_for(layer_tensor(layer, name));
    return lw;
  };
  LayerWeights w;
  w.experts.resize(size_t(spec_.num_experts));
  for (const NormSlot& n : arch().norms) w.*(n.member) = up(str_cat(n.name, ".weight"));
  for (const DenseLinearSlot& d : dense_linears(spec_)) w.*(d.member) = linear(d.name, false);
  for (const LinearSlot& lin : layer_linears(spec_)) {
    // A routed expert another rank owns is not among `from`'s tensors (pipeline/moe_experts.h):
    // undefined until its fitted weights arrive; statistics passes skip routed experts.
    const bool routed = lin.expert != kNoExpert && lin.expert != kSharedExpert;
    if (routed && !from.contains(layer_tensor(layer, lin.name + ".weight"))) continue;
    linear_of(w, lin) = linear(lin.name, has_bias(spec_, lin));
  }
  return w;
}

ActFormat CausalLM::act_format_for(const std::string& module) const {
  return act_for_ ? act_for_(module) : ActFormat::None;
}

void CausalLM::quantize_input(const std::string& module, Tensor& x) {
  const ActFormat f = act_format_for(module);
  if (f != ActFormat::None) backend_.fake_quant_activations(x, f, x);
}

Tensor CausalLM::embed(const Tensor& tokens) const {
  Tensor h = backend_.zeros(DType::F32, {tokens.numel(), spec_.hidden_size});
  backend_.embedding(weights_.get("model.embed_tokens.weight"), tokens, h);
  return h;
}

const Tensor& CausalLM::positions(int64_t batch, int64_t seqlen) {
  if (rope_host_.cos.defined() ? rope_host_.cos.dim(0) < seqlen : true) {
    if (spec_.sliding_window && seqlen > *spec_.sliding_window)
      fail_input("seqlen ", seqlen, " exceeds the model's sliding_window ", *spec_.sliding_window,
                 "; sliding-window attention is not implemented: use --seqlen <= ",
                 *spec_.sliding_window);
    if (seqlen > spec_.max_position_embeddings)
      log_warn("seqlen ", seqlen, " exceeds max_position_embeddings ",
               spec_.max_position_embeddings, " of the model; quality may suffer");
    rope_host_ = make_rope_tables(spec_, seqlen);
    rope_cos_ = backend_.upload(rope_host_.cos);
    rope_sin_ = backend_.upload(rope_host_.sin);
  }
  if (batch != positions_batch_ || seqlen != positions_seqlen_) {
    Tensor p = Tensor::zeros(DType::I32, {batch * seqlen});
    for (int64_t i = 0; i < batch * seqlen; ++i) p.data<int32_t>()[i] = int32_t(i % seqlen);
    positions_ = backend_.upload(p);
    positions_batch_ = batch;
    positions_seqlen_ = seqlen;
  }
  return positions_;
}

GroupInput CausalLM::attention_input(const LayerWeights& w, const Tensor& h) {
  Backend& be = backend_;
  GroupInput in;
  in.x = be.zeros(DType::F32, {h.dim(0), spec_.hidden_size});
  be.rmsnorm(h, w.input_norm, float(spec_.rms_norm_eps), in.x);
  in.xq = quantized_input(be, in.x, {&w.q, &w.k, &w.v});
  return in;
}

Tensor CausalLM::attention_heads(const LayerWeights& w, const GroupInput& in, int64_t batch, int64_t seqlen) {
  const ModelSpec& s = spec_;
  const int64_t T = batch * seqlen;
  Backend& be = backend_;
  const Tensor& pos = positions(batch, seqlen);
  Tensor q = be.zeros(DType::F32, {T, s.q_dim()});
  Tensor k = be.zeros(DType::F32, {T, s.kv_dim()});
  Tensor v = be.zeros(DType::F32, {T, s.kv_dim()});
  be.linear(input_of(w.q, in.x, in.xq), w.q.weight, bias_of(w.q), q);
  be.linear(input_of(w.k, in.x, in.xq), w.k.weight, bias_of(w.k), k);
  be.linear(input_of(w.v, in.x, in.xq), w.v.weight, bias_of(w.v), v);
  if (w.q_norm.defined()) {  // qwen3: RMSNorm over each head's head_dim, before RoPE
    Tensor qh = q.reshape({T * s.n_heads, s.head_dim}), kh = k.reshape({T * s.n_kv_heads, s.head_dim});
    be.rmsnorm(qh, w.q_norm, float(s.rms_norm_eps), qh);
    be.rmsnorm(kh, w.k_norm, float(s.rms_norm_eps), kh);
  }
  be.rope(q, s.n_heads, s.head_dim, rope_cos_, rope_sin_, pos);
  be.rope(k, s.n_kv_heads, s.head_dim, rope_cos_, rope_sin_, pos);
  Tensor attn = be.zeros(DType::F32, {T, s.q_dim()});
  const AttentionShape shape{batch, seqlen, s.n_heads, s.n_kv_heads, s.head_dim};
  be.attention(q, k, v, shape, float(1.0 / std::sqrt(double(s.head_dim))), attn);
  if (w.o.act != ActFormat::None) be.fake_quant_activations(attn, w.o.act, attn);
  return attn;
}

void CausalLM::add_attention_output(const LayerWeights& w, const Tensor& attn, Tensor& h) {
  Tensor y = backend_.zeros(DType::F32, {h.dim(0), spec_.hidden_size});
  backend_.linear(attn, w.o.weight, bias_of(w.o), y);
  backend_.add_inplace(h, y);
}

GroupInput CausalLM::mlp_input(const LayerWeights& w, const Tensor& h) {
  Backend& be = backend_;
  GroupInput in;
  in.x = be.zeros(DType::F32, {h.dim(0), spec_.hidden_size});
  be.rmsnorm(h, w.post_attention_norm, float(spec_.rms_norm_eps), in.x);
  in.xq = quantized_input(be, in.x, {&w.gate, &w.up});
  return in;
}

Tensor CausalLM::mlp_activation(const LayerWeights& w, const GroupInput& in) {
  Backend& be = backend_;
  const int64_t T = in.x.dim(0);
  Tensor gate = be.zeros(DType::F32, {T, spec_.intermediate_size});
  Tensor up = be.zeros(DType::F32, {T, spec_.intermediate_size});
  be.linear(input_of(w.gate, in.x, in.xq), w.gate.weight, bias_of(w.gate), gate);
  be.linear(input_of(w.up, in.x, in.xq), w.up.weight, bias_of(w.up), up);
  be.silu_mul(gate, up, gate);
  if (w.down.act != ActFormat::None) be.fake_quant_activations(gate, w.down.act, gate);
  return gate;
}

void CausalLM::add_mlp_output(const LayerWeights& w, const Tensor& act, Tensor& h) {
  Tensor y = backend_.zeros(DType::F32, {h.dim(0), spec_.hidden_size});
  backend_.linear(act, w.down.weight, bias_of(w.down), y);
  backend_.add_inplace(h, y);
}

void CausalLM::layer_forward(int64_t layer, const LayerWeights& w, Tensor& h, int64_t batch,
                             int64_t seqlen, LayerObserver* observer) {
  QS_ASSERT(h.shape() == (Shape{batch * seqlen, spec_.hidden_size}), "layer_forward got ", shape_str(h.shape()));
  auto observe = [&](LinearGroup g, const Tensor& x) {  // true: stop here
    if (!observer) return false;
    observer->on_linear_input(layer, g, x);
    return observer->stop_after(g);
  };
  const GroupInput a = attention_input(w, h);
  if (observe(LinearGroup::QKV, a.seen())) return;
  const Tensor attn = attention_heads(w, a, batch, seqlen);
  if (observe(LinearGroup::O, attn)) return;
  add_attention_output(w, attn, h);
  const GroupInput m = mlp_input(w, h);
  if (!w.experts.empty()) {
    add_moe_output(layer, w, m, h, observer);
    return;
  }
  if (observe(LinearGroup::GateUp, m.seen())) return;
  const Tensor act = mlp_activation(w, m);
  if (observe(LinearGroup::Down, act)) return;
  add_mlp_output(w, act, h);
}

GroupInput CausalLM::expert_input(const ExpertWeights& e, Tensor x) {
  GroupInput in;
  in.xq = quantized_input(backend_, x, {&e.gate, &e.up});
  in.x = std::move(x);
  return in;
}

Tensor CausalLM::expert_activation(const ExpertWeights& e, const GroupInput& in, int64_t inter) {
  Backend& be = backend_;
  const int64_t T = in.x.dim(0);
  Tensor gate = be.zeros(DType::F32, {T, inter});
  Tensor up = be.zeros(DType::F32, {T, inter});
  be.linear(input_of(e.gate, in.x, in.xq), e.gate.weight, bias_of(e.gate), gate);
  be.linear(input_of(e.up, in.x, in.xq), e.up.weight, bias_of(e.up), up);
  be.silu_mul(gate, up, gate);
  if (e.down.act != ActFormat::None) be.fake_quant_activations(gate, e.down.act, gate);
  return gate;
}

// As transformers' sparse MoE blocks: each expert on the rows routed to it, its output
// scaled by the routing weight and added in expert order, then qwen2_moe's shared expert
// times sigmoid(shared_expert_gate(x)). Routing and the scatter run on the host.
bool CausalLM::add_moe_output(int64_t layer, const LayerWeights& w, const GroupInput& in, Tensor& h,
                              LayerObserver* observer) {
  Backend& be = backend_;
  const ModelSpec& s = spec_;
  const int64_t T = in.x.dim(0), H = s.hidden_size;
  Tensor logits = be.zeros(DType::F32, {T, s.num_experts});
  be.linear(in.x, w.router.weight, bias_of(w.router), logits);
  const Routing r = route_tokens(be.download(logits), s.experts_per_token, s.norm_topk_prob);
  const Tensor x_host = be.download(in.x);
  Tensor out = Tensor::zeros(DType::F32, {T, H});
  const bool skip_routed = observer && observer->on_moe_input(layer, x_host, r);
  // rows: the routed tokens of rows_in (an expert), or null (every token); an undefined
  // rows_in with `width`: an expert no token reached.
  auto observe = [&](GroupId g, const Tensor& rows_in, const std::vector<int64_t>* rows, int64_t width = 0) {
    if (!observer) return false;
    if (!rows_in.defined())
      observer->on_linear_input(layer, g, be.zeros(DType::F32, {T, width}));
    else if (rows)
      observer->on_linear_input(layer, g, be.upload(scatter_rows(be.download(rows_in), *rows, T)));
    else
      observer->on_linear_input(layer, g, rows_in);
    return observer->stop_after(g);
  };
  auto accumulate = [&](const Tensor& y, const std::vector<int64_t>& rows, const std::vector<float>& wt) {
    const Tensor yh = be.download(y);
    for (size_t i = 0; i < rows.size(); ++i)
      for (int64_t j = 0; j < H; ++j) out.data<float>()[rows[i] * H + j] += wt[i] * yh.data<float>()[int64_t(i) * H + j];
  };
  for (int e = 0; e < int(s.num_experts) && !skip_routed; ++e) {
    const ExpertWeights& ex = w.experts[size_t(e)];
    const std::vector<int64_t>& rows = r.rows[size_t(e)];
    if (rows.empty()) {  // no token for this expert: the observer still sees its (zero) inputs
      if (observe({LinearGroup::GateUp, e}, Tensor(), nullptr, H) ||
          observe({LinearGroup::Down, e}, Tensor(), nullptr, s.moe_intermediate_size))
        return false;
      continue;
    }
    const GroupInput gi = expert_input(ex, be.upload(gather_rows(x_host, rows)));
    if (observe({LinearGroup::GateUp, e}, gi.seen(), &rows)) return false;
    const Tensor act = expert_activation(ex, gi, s.moe_intermediate_size);
    if (observe({LinearGroup::Down, e}, act, &rows)) return false;
    Tensor y = be.zeros(DType::F32, {int64_t(rows.size()), H});
    be.linear(act, ex.down.weight, bias_of(ex.down), y);
    accumulate(y, rows, r.weights[size_t(e)]);
  }
  if (s.shared_expert_intermediate_size > 0) {
    const ExpertWeights& ex = w.shared;
    GroupInput gi{in.x, quantized_input(be, in.x, {&ex.gate, &ex.up})};
    if (observe({LinearGroup::GateUp, kSharedExpert}, gi.seen(), nullptr)) return false;
    const Tensor act = expert_activation(ex, gi, s.shared_expert_intermediate_size);
    if (observe({LinearGroup::Down, kSharedExpert}, act, nullptr)) return false;
    Tensor y = be.zeros(DType::F32, {T, H}), g = be.zeros(DType::F32, {T, 1});
    be.linear(act, ex.down.weight, bias_of(ex.down), y);
    be.linear(in.x, w.shared_gate.weight, nullptr, g);
    const Tensor gh = be.download(g);
    std::vector<float> sig(static_cast<size_t>(T));
    std::vector<int64_t> all(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      sig[size_t(t)] = 1.0f / (1.0f + std::exp(-gh.data<float>()[t]));
      all[size_t(t)] = t;
    }
    accumulate(y, all, sig);
  }
  backend_.add_inplace(h, be.upload(out));
  return true;
}

Tensor CausalLM::forward_hidden(const Tensor& tokens, int64_t batch, int64_t seqlen,
                                LayerObserver* observer) {
  QS_ASSERT(tokens.numel() == batch * seqlen, "forward_hidden: ", tokens.numel(), " tokens for ",
            batch, "x", seqlen);
  Tensor h = embed(tokens);
  for (int64_t l = 0; l < spec_.num_layers; ++l) {
    const LayerWeights w = load_layer(l);  // dropped at the end of the iteration
    layer_forward(l, w, h, batch, seqlen, observer);
  }
  if (!final_norm_.defined()) final_norm_ = backend_.upload(weights_.get("model.norm.weight"));
  backend_.rmsnorm(h, final_norm_, float(spec_.rms_norm_eps), h);
  return h;
}

Tensor CausalLM::logits(const Tensor& hidden) {
  if (!lm_head_.defined()) {
    // transformers ties whenever the config says so, even if lm_head.weight is stored.
    const bool tied = spec_.tie_word_embeddings || !weights_.contains("lm_head.weight");
    lm_head_ = backend_.upload(weights_.get(tied ? "model.embed_tokens.weight" : "lm_head.weight"));
  }
  Tensor out = backend_.zeros(DType::F32, {hidden.dim(0), spec_.vocab_size});
  const ActFormat f = act_format_for("lm_head");
  if (f != ActFormat::None) {
    Tensor xq = backend_.zeros(DType::F32, hidden.shape());
    backend_.fake_quant_activations(hidden, f, xq);
    backend_.linear(xq, lm_head_, nullptr, out);
  } else {
    backend_.linear(hidden, lm_head_, nullptr, out);
  }
  return out;
}

}  // namespace qshard
