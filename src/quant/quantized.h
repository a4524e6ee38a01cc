// One quantized Linear in a format-neutral layout: what RTN and GPTQ produce and what
// every exporter packs from (GPTQ, compressed-tensors, HDF5, fake-quant).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "quant/format.h"

namespace qshard {

struct QuantizedLinear {
  QuantFormat format;
  int64_t out_features = 0;
  int64_t in_features = 0;
  // [out, in] row-major, original column order, one code per weight:
  //   Int: unsigned q in [0, 2^bits), w ≈ scale · (q − zero)   (GPTQ's convention: a
  //        symmetric format has zero = 2^(bits−1));
  //   MXInt: two's-complement k-bit integer in the low `bits` bits;
  //   MXFP4/NVFP4: E2M1 code in the low nibble (bit 3 sign, bits 2..0 magnitude).
  std::vector<uint8_t> codes;
  // [out, n_groups] decoded scales: Int: the step; MX: 2^e (a power of two, E8M0-
  // representable); NVFP4: the decoded E4M3 block scale, without the tensor scale.
  std::vector<float> scales;
  // [out, n_groups] integer-valued zero points (Int only; empty otherwise).
  std::vector<float> zeros;
  // [in]: group of each input column. c / group_width unless act-order without static
  // groups permuted it.
  std::vector<int32_t> g_idx;
  float tensor_scale = 1.0f;  // NVFP4's per-tensor fp32 scale (decode direction)
  // GGML K-quants only: [out, in/256, 2], each super-block's FP16 d and dmin (0 for Q6_K);
  // scales/zeros above are then d·sc and dmin·m (quant/kquant.h). Empty otherwise.
  std::vector<float> super_scales;

  int64_t n_groups() const { return format.n_groups(in_features); }
  bool has_act_order_g_idx() const;  // g_idx differs from c / group_width
  // Host F32 [out, in]: the weights an engine computes with (fake-quant export, eval).
  Tensor dequantize() const;
};

}  // namespace qshard
