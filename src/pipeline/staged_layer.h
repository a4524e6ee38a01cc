// True-sequential calibration of one decoder layer with each step of the forward run
// once. Group g's input depends on the quantized weights of the groups before it only,
// so the stages advance in order — QKV, O, gate/up, down, then the layer's output — each
// from the previous stage's result: attention once with the quantized q/k/v, o_proj's
// output added once h moves to the MLP half, gate/up once with the quantized gate/up.
// Re-running the layer from its input for every group (what the pipeline did before)
// costs ~4× the attention half and 2× gate/up; the bytes are the same, since every step
// sees the same inputs in the same batches.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/decoder.h"

namespace qshard {

class StagedLayer {
 public:
  // h: the layer's input rows [windows*seqlen, hidden], advanced in place to its output by
  // the time finish() returns. Intermediates (attention output, down's input) are kept
  // per batch while their total stays under cache_bytes, else recomputed from h.
  StagedLayer(CausalLM& lm, int64_t windows, int64_t seqlen, int64_t per_batch, uint64_t cache_bytes);

  // Calls observe(x) on each batch's input of group g, with w's weights as they are now.
  // Groups in order QKV, O, GateUp, Down, each once.
  void collect(LinearGroup g, const LayerWeights& w, Tensor& h, const std::function<void(const Tensor&)>& observe);
  // h += the layer's output (w quantized); after collect(Down).
  void finish(const LayerWeights& w, Tensor& h);

 private:
  template <class F>
  void for_batches(F&& f);
  Tensor attention(const LayerWeights& w, const Tensor& rows, int64_t b, int64_t B);
  Tensor activation(const LayerWeights& w, const Tensor& rows, int64_t b);
  bool keep(const Tensor& t);  // counts t against the cache budget

  CausalLM& lm_;
  int64_t windows_, seqlen_, per_batch_;
  uint64_t cache_bytes_, cached_ = 0;
  int next_ = 0;  // the stage collect() expects next
  std::vector<Tensor> attn_, act_;  // per batch; undefined where not kept
};

}  // namespace qshard
