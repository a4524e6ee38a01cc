// Number formats qshard quantizes weights to: what the user names on the command line
// (--format int4 --group-size 128 --sym) as one value the rest of the code passes around.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qshard {

enum class FormatFamily {
  Int,    // INTk, k = 2..8, group-wise scale (+ zero point when asymmetric)
  MXInt,  // MXINTk, k = 8, 6, 4, 3: k-bit signed integer elements, E8M0 shared exponent per block
  MXFP4,  // OCP MXFP4: E2M1 elements, E8M0 shared exponent per block of 32
  NVFP4,  // E2M1 elements, E4M3 scale per 16, fp32 tensor scale
  // llama.cpp's 32-element block types (ggml-common.h), FP16 scale d per block:
  // Q4_0/Q5_0/Q8_0 (symmetric): w = d·(q − 2^(bits−1)); Q4_1/Q5_1: w = d·q + m, FP16 m.
  GgmlBlock,
  // llama.cpp's K-quants (quant/kquant.h): Q4_K, Q5_K (32-element sub-blocks with 6-bit
  // scale and min codes, w = d·sc·q − dmin·m), Q3_K and Q6_K (16-element sub-blocks,
  // 6-bit / int8 signed scales, w = d·sc·(q − 2^(bits−1))), in 256-element super-blocks
  // with FP16 d (and dmin). Q2_K: 16-element sub-blocks with 4-bit scale and min codes,
  // w = d·sc·q − dmin·m, q in 0..3.
  GgmlK,
  // llama.cpp's non-linear 4-bit types (quant/iq4.h): w = scale·kvalues_iq4nl[q] with
  // IQ4_NL's FP16 d per 32-block, or IQ4_XS's d·(ls − 32) per 32-element sub-block
  // (6-bit ls) in 256-element super-blocks with FP16 d.
  GgmlIQ4NL,
  GgmlIQ4XS,
};

struct QuantFormat {
  FormatFamily family = FormatFamily::Int;
  int bits = 4;
  // Columns (input features) sharing one scale: INT 32/64/128/... or -1 (one group per
  // output channel); MX block size (32 default; 16, 32, 128); NVFP4 always 16.
  int64_t group_size = 128;
  bool symmetric = true;  // INT only; MX/NV formats are symmetric by construction

  // --format NAME: int2..int8, mxint8/6/4/3, mxfp4, nvfp4, q4_0, q4_1, q5_0, q5_1, q8_0,
  // q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs. group_size 0 means the
  // family's default (INT 128, MX 32, NVFP4 16). InputError on anything unsupported.
  static QuantFormat parse(const std::string& name, int64_t group_size, bool symmetric);

  std::string name() const;      // "int4", "mxint8", "mxfp4", "nvfp4"
  std::string describe() const;  // "int4 g128 sym", "mxfp4 b32", "nvfp4 b16"
  // Width of one group for a row of `in_features` columns (per-channel: all of them).
  int64_t group_width(int64_t in_features) const;
  int64_t n_groups(int64_t in_features) const;  // in_features / group_width (exact)
  // Whether --group-size `group` is one this format takes (INT: any positive; MX: its blocks).
  bool accepts_group_size(int64_t group) const;
  // InputError naming `tensor` if in_features does not divide into groups. The fix it
  // suggests are group sizes that divide every one of `all_in_features` (pass every
  // quantized matrix's, so that the suggestion is not refused on the next matrix), or
  // in_features alone when that is empty.
  void check_divides(int64_t in_features, const std::string& tensor,
                     const std::vector<int64_t>& all_in_features = {}) const;
  bool is_ggml() const {
    return family == FormatFamily::GgmlBlock || family == FormatFamily::GgmlK || is_iq4();
  }
  // Scales fitted by llama.cpp's whole-block fit (kquant_rtn: K-quants' super-blocks,
  // IQ4's scale search), which GPTQ and the AWQ family hold fixed; no per-group range search.
  bool uses_kquant_fit() const { return family == FormatFamily::GgmlK || is_iq4(); }
  bool is_iq4() const { return family == FormatFamily::GgmlIQ4NL || family == FormatFamily::GgmlIQ4XS; }
  // Elements of a GGML type's block as llama.cpp counts it (ggml_blck_size): 256 for the
  // super-block types (K-quants, IQ4_XS), 32 for the others; 0 for non-GGML formats.
  int64_t ggml_block() const {
    return family == FormatFamily::GgmlK || family == FormatFamily::GgmlIQ4XS ? 256 : is_ggml() ? 32 : 0;
  }
  bool has_zero_point() const { return family == FormatFamily::Int && !symmetric; }
  // Whether QuantizedLinear::zeros is filled: Int (integer zero points, symmetric ones
  // too) and the GGML _1 types (their FP16 block minimum m, a float offset).
  bool stores_zeros() const {
    return family == FormatFamily::Int ||
           ((family == FormatFamily::GgmlBlock || family == FormatFamily::GgmlK) && !symmetric);
  }
};

// Group sizes `f` takes that divide every one of `in_features` (all positive), largest
// first, at most `max_count`, always including the largest power of two among them.
std::vector<int64_t> common_group_sizes(const QuantFormat& f, const std::vector<int64_t>& in_features,
                                        size_t max_count = 6);

}  // namespace qshard
