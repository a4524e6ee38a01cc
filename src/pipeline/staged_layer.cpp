#include "pipeline/staged_layer.h"

#include "core/error.h"

namespace qshard {

StagedLayer::StagedLayer(CausalLM& lm, int64_t windows, int64_t seqlen, int64_t per_batch, uint64_t cache_bytes)
    : lm_(lm), windows_(windows), seqlen_(seqlen), per_batch_(per_batch), cache_bytes_(cache_bytes) {}

template <class F>
void StagedLayer::for_batches(F&& f) {
  int64_t b = 0;
  for (int64_t w0 = 0; w0 < windows_; w0 += per_batch_, ++b) {
    const int64_t B = std::min(per_batch_, windows_ - w0);
    f(b, w0, B);
  }
}

bool StagedLayer::keep(const Tensor& t) {
  if (cached_ + t.nbytes() > cache_bytes_) return false;
  cached_ += t.nbytes();
  return true;
}

// O's input of batch b: kept from collect(O), or recomputed (q/k/v are quantized by then).
Tensor StagedLayer::attention(const LayerWeights& w, const Tensor& rows, int64_t b, int64_t B) {
  if (size_t(b) < attn_.size() && attn_[size_t(b)].defined()) return attn_[size_t(b)];
  return lm_.attention_heads(w, lm_.attention_input(w, rows), B, seqlen_);
}

// Down's input of batch b (rows: the residual after the attention half).
Tensor StagedLayer::activation(const LayerWeights& w, const Tensor& rows, int64_t b) {
  if (size_t(b) < act_.size() && act_[size_t(b)].defined()) return act_[size_t(b)];
  return lm_.mlp_activation(w, lm_.mlp_input(w, rows));
}

void StagedLayer::collect(LinearGroup g, const LayerWeights& w, Tensor& h,
                          const std::function<void(const Tensor&)>& observe) {
  QS_ASSERT(int(g) == next_, "StagedLayer: group ", linear_group_name(g), " out of order");
  ++next_;
  const int64_t S = seqlen_;
  for_batches([&](int64_t b, int64_t w0, int64_t B) {
    Tensor rows = h.rows(w0 * S, (w0 + B) * S);
    switch (g) {
      case LinearGroup::QKV:
        observe(lm_.attention_input(w, rows).seen());
        break;
      case LinearGroup::O: {
        Tensor attn = attention(w, rows, b, B);
        observe(attn);
        attn_.push_back(keep(attn) ? attn : Tensor());
        break;
      }
      case LinearGroup::GateUp: {
        // o_proj is quantized now: the residual moves on to the MLP half, in place.
        lm_.add_attention_output(w, attention(w, rows, b, B), rows);
        attn_[size_t(b)] = Tensor();
        observe(lm_.mlp_input(w, rows).seen());
        break;
      }
      case LinearGroup::Down: {
        Tensor act = activation(w, rows, b);
        observe(act);
        act_.push_back(keep(act) ? act : Tensor());
        break;
      }
    }
  });
  if (g == LinearGroup::GateUp) cached_ = 0;  // the attention outputs are dropped
}

void StagedLayer::finish(const LayerWeights& w, Tensor& h) {
  QS_ASSERT(next_ == 4, "StagedLayer::finish before every group was collected");
  const int64_t S = seqlen_;
  for_batches([&](int64_t b, int64_t w0, int64_t B) {
    Tensor rows = h.rows(w0 * S, (w0 + B) * S);
    lm_.add_mlp_output(w, activation(w, rows, b), rows);
    act_[size_t(b)] = Tensor();
  });
  cached_ = 0;
}

}  // namespace qshard
