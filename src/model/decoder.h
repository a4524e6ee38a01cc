// The Llama-family causal LM forward, written once against Backend. Weights are read
// from a TensorSource one layer at a time, so memory holds one layer plus the
// activations, whatever the depth of the model.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/tensor.h"
#include "kernels/backend.h"
#include "model/architecture.h"
#include "model/model_spec.h"
#include "model/moe.h"
#include "model/rope.h"

namespace qshard {

// The activation format of a Linear's input by module name ("model.layers.0.mlp.up_proj",
// "lm_head"): W8A8-style runs quantize the inputs of the quantized Linears only.
using ActFormatFor = std::function<ActFormat(const std::string& module)>;

// Sees the input of every linear group during a layer forward (the calibration
// pipeline's hook for Hessians and activation statistics).
class LayerObserver {
 public:
  virtual ~LayerObserver() = default;
  // An expert's group (MoE) sees every token's row, zero where the token is not routed to
  // it, so per-window sums (pipeline/hessian_sum.h) see the windows as they are.
  virtual void on_linear_input(int64_t layer, GroupId group, const Tensor& x) = 0;
  // True when nothing after this group's input is needed: the forward stops there
  // (statistics passes need not finish the layer; h is then left partly updated).
  virtual bool stop_after(GroupId) const { return false; }
  // MoE: the MLP's normed input rows (host F32 [tokens, hidden], every token) and
  // where the router sends them, before any expert runs. True: the routed experts are
  // skipped (a statistics pass that takes their rows from here: the pipeline sends them to
  // each expert's owner, pipeline/moe_experts.h); the layer's output is then incomplete.
  virtual bool on_moe_input(int64_t /*layer*/, const Tensor& /*x*/, const Routing& /*r*/) { return false; }
};

// A linear group's input: the normed rows, and their fake-quantized copy when a Linear
// of the group quantizes its input (undefined otherwise).
struct GroupInput {
  Tensor x, xq;
  const Tensor& seen() const { return xq.defined() ? xq : x; }  // what the observer sees
};

class CausalLM {
 public:
  // Checks every tensor the spec names exists with the right shape; throws InputError.
  CausalLM(ModelSpec spec, const TensorSource& weights, Backend& backend);

  const ModelSpec& spec() const { return spec_; }
  const Architecture& arch() const { return architecture(spec_.arch); }
  Backend& backend() { return backend_; }

  // Checkpoint tensor names (e.g. "model.layers.3.self_attn.q_proj.weight").
  std::string layer_tensor(int64_t layer, const std::string& suffix) const;
  LayerWeights load_layer(int64_t layer) const;
  // The same from another source of this layer's tensors (e.g. weights broadcast by the
  // rank that read them).
  LayerWeights load_layer(int64_t layer, const TensorSource& from) const;

  // From the next load_layer / logits on, each Linear's input is fake-quantized to
  // act_for(module) before its GEMM (Backend::fake_quant_activations); the observer sees
  // the quantized input, as the Linears do. Empty function: no activation quantization.
  void set_activation_quant(ActFormatFor act_for) { act_for_ = std::move(act_for); }
  ActFormat act_format_for(const std::string& module) const;
  // x fake-quantized in place as `module`'s input (nothing when it has no act format),
  // for a Linear run outside layer_forward (the pipeline's lm_head calibration).
  void quantize_input(const std::string& module, Tensor& x);

  // h[B*S, hidden] = embed_tokens[tokens]; tokens host I32 [B*S].
  Tensor embed(const Tensor& tokens) const;
  // One decoder layer, in place on the residual stream h[B*S, hidden].
  void layer_forward(int64_t layer, const LayerWeights& w, Tensor& h, int64_t batch,
                     int64_t seqlen, LayerObserver* observer = nullptr);
  // layer_forward in its steps, for true-sequential calibration (pipeline/staged_layer.h),
  // which runs each step once between quantizing the groups. h: [batch*seqlen, hidden].
  GroupInput attention_input(const LayerWeights& w, const Tensor& h);  // QKV's input
  // O's input: attention over q, k, v of `in`.
  Tensor attention_heads(const LayerWeights& w, const GroupInput& in, int64_t batch, int64_t seqlen);
  void add_attention_output(const LayerWeights& w, const Tensor& attn, Tensor& h);  // h += o(attn)
  GroupInput mlp_input(const LayerWeights& w, const Tensor& h);  // gate/up's input
  Tensor mlp_activation(const LayerWeights& w, const GroupInput& in);  // down's input
  void add_mlp_output(const LayerWeights& w, const Tensor& act, Tensor& h);  // h += down(act)
  // MoE layers: h += the experts' (and shared expert's) output on the normed rows `in`;
  // false when the observer stopped the forward.
  bool add_moe_output(int64_t layer, const LayerWeights& w, const GroupInput& in, Tensor& h,
                      LayerObserver* observer);
  // An expert's input (x, and its fake-quantized copy when its gate/up quantize their
  // input) and its silu(gate)·up on those rows: an owner rank runs its experts on the
  // rows routed to them from every rank (pipeline/moe_experts.h).
  GroupInput expert_input(const ExpertWeights& e, Tensor x);
  Tensor expert_activation(const ExpertWeights& e, const GroupInput& in, int64_t inter);
  // Embedding, every layer, final norm: backend F32 [B*S, hidden].
  Tensor forward_hidden(const Tensor& tokens, int64_t batch, int64_t seqlen,
                        LayerObserver* observer = nullptr);
  // lm_head on final-norm hidden rows: backend F32 [rows, vocab].
  Tensor logits(const Tensor& hidden);

 private:
  void check_shapes() const;
  const Tensor& positions(int64_t batch, int64_t seqlen);

  ModelSpec spec_;
  const TensorSource& weights_;
  Backend& backend_;
  RopeTables rope_host_;
  Tensor rope_cos_, rope_sin_;  // backend copies, grown on demand
  Tensor positions_;
  int64_t positions_batch_ = -1, positions_seqlen_ = -1;
  Tensor final_norm_, lm_head_;  // uploaded once: every window needs them
  ActFormatFor act_for_;
};

}  // namespace qshard
