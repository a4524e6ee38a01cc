// GPTQ (Frantar et al. 2022) as in the reference gptq.py, see
// shared/docs/algorithms.md §1 and §7 (MX formats).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "quant/quantized.h"
#include "quant/rtn.h"
#include "quant/scheme.h"

namespace qshard {

// Σ xxᵀ over calibration tokens in fp32, plus the token count; normalization is applied
// once (GPTQ is invariant to the scale of H).
class Backend;
struct DeviceHessianSum;  // quant/cuda: the part of the sum still on the GPU

class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t in_features);
  ~HessianAccumulator();
  HessianAccumulator(HessianAccumulator&&) noexcept;
  HessianAccumulator& operator=(HessianAccumulator&&) noexcept;
  // x: [tokens, in_features], a host tensor (any float dtype), or an F32 tensor on the
  // CUDA `backend` — summed there (SSYRK) and fetched once, when sum() is next read.
  void add(const Tensor& x, Backend* backend = nullptr);
  int64_t tokens() const { return tokens_; }
  Tensor& sum();  // host F32 [in, in], symmetric (both triangles)
  const Tensor& sum() const;
  // 2/n · Σ xxᵀ (the reference's H).
  Tensor normalized() const;

 private:
  void fetch_device() const;
  mutable Tensor sum_;
  mutable std::unique_ptr<DeviceHessianSum> device_;
  int64_t tokens_ = 0;
};

// How GPTQ handles formats whose scale is shared by a block of columns (MX, NVFP4).
enum class BlockGptq {
  // Fit the block's scale from the updated weights when the block starts, then quantize
  // its columns one GPTQ step at a time (GPTQ's dynamic groups, fitted from W1 rather
  // than the stale global W). Lower error than Microblock on every case measured.
  Columnwise,
  // algorithms.md §7.3 (dmx-compressor): quantize the whole block at once from the
  // updated weights, then compensate with U_SS⁻¹ (forward substitution).
  Microblock,
};

// GPTQ's inverse factor U of one Hessian, kept for the next Linear that reads the same
// input (q/k/v, gate/up, lm_head's row chunks): the O(in³) factorisation depends only on
// H, the damping and the act-order permutation, so each later Linear reuses it — the
// same U, the same bits. The owner keeps H alive and unchanged while the cache is used.
struct GptqFactorCache {
  const float* hessian = nullptr;  // the H it was computed from (its data)
  double damp = -1;                // GptqOptions::damp it was asked with
  bool act_order = false;
  std::shared_ptr<const std::vector<float>> U;
  double damp_used = 0, damp_abs = 0;
  int escalations = 0;
};

struct GptqOptions {
  double damp = 0.01;          // percdamp × mean(diag H)
  int64_t block_size = 128;    // lazy batch
  bool act_order = false;      // desc_act
  bool static_groups = false;
  ClipSearch clip;             // MSE search when fitting group parameters
  BlockGptq block_gptq = BlockGptq::Columnwise;  // MX and NVFP4 only
  // Group parameters fixed by an earlier fit ([out · n_groups], e.g. awq-joint's ranges):
  // used as static groups instead of fitting any (implies static groups).
  const std::vector<GroupParams>* fixed_groups = nullptr;
  // Filled by the first call, reused by the next ones with the same H (CPU GPTQ only).
  GptqFactorCache* factor_cache = nullptr;
  // GGML 32-block types: [in] column importance (diag H); each block's d (and m) is fitted
  // from the updated weights when the block starts by llama.cpp's imatrix-path fit
  // (kquant.h ggml_block_weighted_fit_one) instead of the reference one.
  const std::vector<float>* block_importance = nullptr;
};

struct GptqResult {
  QuantizedLinear q;
  double loss = 0;             // Σ (w − q)² / U_jj² / 2, as the reference reports
  double damp_used = 0;        // after escalation, relative
  // The damping added to H's diagonal: damp_used · mean(diag H), dead diagonals as 1
  // (quant/gptq_error.h turns loss into the undamped output error with it).
  double damp_abs = 0;
  int damp_escalations = 0;    // times H + damp·I was not positive definite
};

// weight: host F32 [out, in]; hessian: host F32 [in, in] (any positive scaling).
GptqResult gptq_quantize(const Tensor& weight, const Tensor& hessian, const Scheme& scheme,
                         const GptqOptions& options, const std::string& name);

}  // namespace qshard
