// Ports of ggml-quants.c's K-quant reference quantizers (make_qkx2_quants, make_qx_quants,
// quantize_row_q{4,5,6}_K_ref). Expressions keep llama.cpp's operand order: fp32 sums in
// the same order give the same bits, which the llama-quantize comparison test checks.
#include "quant/kquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/iq4.h"

namespace qshard {

namespace {

constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS

// llama.cpp's nearest_int: round half to even for |x| ≤ 4194303 (the magic-number trick).
inline int nearest_int(float x) { return int(std::nearbyint(x)); }

inline float fp16_round(float x) { return f16_to_f32(f32_to_f16(x)); }

// make_qkx2_quants: weighted fit of (scale, min ≤ 0) for one sub-block; returns scale,
// sets *the_min = −min. L gets the codes. use_mad: absolute instead of squared errors
// (Q2_K's reference fit).
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                       bool use_mad = false) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = float(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = uint8_t(std::max(0, std::min(nmax, l)));
    float diff = scale * float(L[i]) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = uint8_t(l);
      const float w = weights[i];
      sum_l += w * float(l);
      sum_l2 += w * float(l) * float(l);
      sum_xl += w * float(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * float(Laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        std::memcpy(L, Laux, size_t(n));
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// The value of largest magnitude, with its sign (the first one on ties, as llama.cpp's
// make_qx_quants and make_q3_quants pick it): their scale maps it to -nmax.
float signed_absmax(int n, const float* x) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) amax = ax, max = x[i];
  }
  return max;
}

// make_qx_quants with rmse_type 1 (Q6_K's sub-block fit): error weights qw, or x² when
// qw is null. L gets codes + nmax (uint8_t for Q8_0, whose codes reach 255).
template <typename LT>
float make_qx_quants(int n, int nmax, const float* x, LT* L, const float* qw) {
  const float max = signed_absmax(n, x);
  if (std::fabs(max) < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = float(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = LT(l + nmax);
    const float w = qw ? qw[i] : x[i] * x[i];
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * float(l);
      suml2 += w * float(l) * float(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = LT(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// make_qkx3_quants (the imatrix path's sub-block fit) computes exactly what
// make_qkx2_quants does when weights are given (its flat-block test `max <= min` after
// clamping min to ≤ 0 is `max == min`), so it is that function with the _impl's constants.
float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep) {
  return make_qkx2_quants(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep);
}

// make_qp_quants: positive values x (sub-block scales or mins) onto 0..nmax with one
// scale, weighted by quant_weights; L gets the codes.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = float(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = uint8_t(nearest_int(iscale * x[i]));
  float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * float(L[i]);
    best_mse += quant_weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * float(is) + float(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * float(l);
      mse += quant_weights[i] * diff * diff;
    }
    if (mse < best_mse) best_mse = mse, iscale = iscale_is;
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = uint8_t(l);
    const float w = quant_weights[i];
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      float slx = sumlx - w * x[i] * float(L[i]);
      float sl2 = suml2 - w * float(L[i]) * float(L[i]);
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * float(new_l);
          sl2 += w * float(new_l) * float(new_l);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = uint8_t(new_l), sumlx = slx, suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// make_q3_quants with do_rmse (Q3_K's sub-block fit); L gets codes + nmax.
float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
  const float max = signed_absmax(n, x);
  if (std::fabs(max) < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = float(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = int8_t(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * float(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * float(L[i]) * float(L[i]);
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = std::max(-nmax, std::min(nmax - 1, new_l));
        if (new_l != L[i]) {
          slx += w * x[i] * float(new_l);
          sl2 += w * float(new_l) * float(new_l);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = int8_t(new_l), sumlx = slx, suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Output of one super-block: codes, effective (d·sc, dmin·m) per sub-block, d and dmin.
struct SuperBlock {
  uint8_t* codes;
  float* scales;
  float* mins;  // null for Q6_K
  float* d_dmin;
};

// quantize_row_q4_K_ref / q5_K_ref for one super-block (nmax 15 or 31).
void q45k_block(const float* x, int nmax, float rmin, int nstep, const SuperBlock& out) {
  float mins[8], scales[8], weights[32];
  uint8_t Laux[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, out.codes + 32 * j, &mins[j], Laux,
                                 rmin, 0.1f, nstep);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  const float d = fp16_round(max_scale / 63.f), dmin = fp16_round(max_min / 63.f);
  out.d_dmin[0] = d, out.d_dmin[1] = dmin;
  for (int j = 0; j < 8; ++j) {
    // uint8_t(nearest_int(...)) then MIN(63): values are in [0, 63] here (scale ≤ max).
    const int ls = std::min(63, int(uint8_t(nearest_int(inv_scale * scales[j]))));
    const int lm = std::min(63, int(uint8_t(nearest_int(inv_min * mins[j]))));
    const float dj = d * float(ls);
    const float dm = dmin * float(lm);
    out.scales[j] = dj;
    out.mins[j] = dm;
    if (!dj) continue;  // llama.cpp keeps make_qkx2_quants' codes
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / dj);
      out.codes[32 * j + ii] = uint8_t(std::max(0, std::min(nmax, l)));
    }
  }
}

// llama.cpp's imatrix paths weight each value by importance · sqrt(σ² + x²), with σ² twice
// the super-block's mean square; these keep its summation order (the bytes must match).
float superblock_sigma2(const float* x) {
  float sum_x2 = 0;
  for (int l = 0; l < 256; ++l) sum_x2 += x[l] * x[l];
  return 2 * sum_x2 / 256;
}

// One sub-block's weights into `weights`; returns their sum.
float subblock_weights(const float* x, const float* qw, int n, float sigma2, float* weights) {
  float sumw = 0;
  for (int l = 0; l < n; ++l) weights[l] = qw[l] * std::sqrt(sigma2 + x[l] * x[l]);
  for (int l = 0; l < n; ++l) sumw += weights[l];
  return sumw;
}

// quantize_row_q4_K_impl / q5_K_impl with importance weights qw (256 values): sub-block
// fits weighted by qw·sqrt(σ² + x²), then the 6-bit scale and min codes fitted to the
// sub-blocks' values weighted by their total weight (make_qp_quants).
void q45k_block_weighted(const float* x, int nmax, const float* qw, const SuperBlock& out) {
  float mins[8], scales[8], weights[32], sw[8];
  uint8_t Laux[32], Ls[8], Lm[8];
  const float sigma2 = superblock_sigma2(x);
  for (int j = 0; j < 8; ++j) {
    sw[j] = subblock_weights(x + 32 * j, qw + 32 * j, 32, sigma2, weights);
    scales[j] = make_qkx3_quants(32, nmax, x + 32 * j, weights, out.codes + 32 * j, &mins[j], Laux, -0.9f,
                                 0.05f, 36);
  }
  const float d = fp16_round(make_qp_quants(8, 63, scales, Ls, sw));
  const float dmin = fp16_round(make_qp_quants(8, 63, mins, Lm, sw));
  out.d_dmin[0] = d, out.d_dmin[1] = dmin;
  for (int j = 0; j < 8; ++j) {
    const float dj = d * float(Ls[j]);
    const float dm = dmin * float(Lm[j]);
    out.scales[j] = dj;
    out.mins[j] = dm;
    if (!dj) continue;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / dj);
      out.codes[32 * j + ii] = uint8_t(std::max(0, std::min(nmax, l)));
    }
  }
}

// Q2_K's last pass: each sub-block's values rounded again on d·sc with min dmin·m (2 bits);
// a zero d·sc keeps the codes of the sub-block fit, as llama.cpp does.
void q2k_store(const float* x, float d, float dmin, const int* sc, const int* m, const SuperBlock& out) {
  out.d_dmin[0] = d, out.d_dmin[1] = dmin;
  for (int j = 0; j < 16; ++j) {
    const float dj = d * float(sc[j]);
    const float dm = dmin * float(m[j]);
    out.scales[j] = dj;
    out.mins[j] = dm;
    if (!dj) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = nearest_int((x[16 * j + ii] + dm) / dj);
      out.codes[16 * j + ii] = uint8_t(std::max(0, std::min(3, l)));
    }
  }
}

// quantize_row_q2_K_ref for one super-block: sub-block fits by absolute error weighted by
// |x|, 4-bit scale and min codes on max/15.
void q2k_block(const float* x, const SuperBlock& out) {
  float mins[16], scales[16], weights[16];
  uint8_t Laux[16];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, out.codes + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15,
                                 true);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  int sc[16] = {}, m[16] = {};
  float d = 0.0f, dmin = 0.0f;
  if (max_scale > 0) {
    const float iscale = 15.f / max_scale;
    for (int j = 0; j < 16; ++j) sc[j] = nearest_int(iscale * scales[j]) & 0xF;
    d = fp16_round(max_scale / 15.f);
  }
  if (max_min > 0) {
    const float iscale = 15.f / max_min;
    for (int j = 0; j < 16; ++j) m[j] = nearest_int(iscale * mins[j]) & 0xF;
    dmin = fp16_round(max_min / 15.f);
  }
  q2k_store(x, d, dmin, sc, m, out);
}

// quantize_row_q2_K_impl with importance weights qw (256 values): sub-block fits weighted
// by qw·sqrt(σ² + x²) (σ² the super-block's mean square, not twice it as for the other
// K-quants), then the 4-bit scale and min codes by make_qp_quants weighted by the
// sub-blocks' total weight.
void q2k_block_weighted(const float* x, const float* qw, const SuperBlock& out) {
  float mins[16], scales[16], sw[16], weight[16];
  uint8_t Laux[16], Ls[16], Lm[16];
  float sumx2 = 0;
  for (int j = 0; j < 256; ++j) sumx2 += x[j] * x[j];
  const float sigma2 = sumx2 / 256;
  for (int j = 0; j < 16; ++j) {
    sw[j] = subblock_weights(x + 16 * j, qw + 16 * j, 16, sigma2, weight);
    scales[j] = make_qkx3_quants(16, 3, x + 16 * j, weight, out.codes + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36);
  }
  const float d = fp16_round(make_qp_quants(16, 15, scales, Ls, sw));
  const float dmin = fp16_round(make_qp_quants(16, 15, mins, Lm, sw));
  int sc[16], m[16];
  for (int j = 0; j < 16; ++j) sc[j] = Ls[j], m[j] = Lm[j];
  q2k_store(x, d, dmin, sc, m, out);
}

// Q3_K's super-block scale d and signed 6-bit sub-block codes sc: each sub-block's values
// rounded again on d·sc (3 bits, offset 4); a zero scale keeps the codes of the fit in L.
void q3k_store(const float* x, float d, const int* sc, int8_t* L, const SuperBlock& out) {
  out.d_dmin[0] = d, out.d_dmin[1] = 0.0f;
  for (int j = 0; j < 16; ++j) {
    const float dj = d * float(sc[j]);
    out.scales[j] = dj;
    if (dj) {
      for (int ii = 0; ii < 16; ++ii) {
        const int l = std::max(-4, std::min(3, nearest_int(x[16 * j + ii] / dj)));
        L[16 * j + ii] = int8_t(l + 4);
      }
    }
    for (int ii = 0; ii < 16; ++ii) out.codes[16 * j + ii] = uint8_t(L[16 * j + ii]);
  }
}

// quantize_row_q3_K_ref for one super-block (6-bit signed sub-block scales).
void q3k_block(const float* x, const SuperBlock& out) {
  float scales[16];
  int8_t L[256];
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
    const float scale = std::fabs(scales[j]);
    if (scale > amax) amax = scale, max_scale = scales[j];
  }
  int sc[16] = {};
  float d = 0.0f;
  if (max_scale) {
    const float iscale = -32.f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int8_t l = int8_t(nearest_int(iscale * scales[j]));
      sc[j] = std::max(-32, std::min(31, int(l)));
    }
    d = fp16_round(1 / iscale);
  }
  q3k_store(x, d, sc, L, out);
}

// quantize_row_q3_K_impl with importance weights qw (256 values): sub-block fits weighted
// by qw·sqrt(σ² + x²), then the 6-bit signed scale codes fitted to the sub-blocks' scales
// weighted by their total weight (make_qx_quants with nmax 32).
void q3k_block_weighted(const float* x, const float* qw, const SuperBlock& out) {
  float scales[16], weight[16], sw[16];
  int8_t L[256], Ls[16];
  const float sigma2 = superblock_sigma2(x);
  for (int j = 0; j < 16; ++j) {
    sw[j] = subblock_weights(x + 16 * j, qw + 16 * j, 16, sigma2, weight);
    scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
  }
  const float d = fp16_round(make_qx_quants(16, 32, scales, Ls, sw));
  int sc[16];
  for (int j = 0; j < 16; ++j) sc[j] = int(Ls[j]) - 32;
  q3k_store(x, d, sc, L, out);
}

// quantize_row_q6_K_ref (qw null) / q6_K_impl (importance weights qw) for one super-block.
void q6k_block(const float* x, const float* qw, const SuperBlock& out) {
  float scales[16];
  int8_t L[256];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : nullptr);
    scales[ib] = scale;
    const float abs_scale = std::fabs(scale);
    if (abs_scale > max_abs_scale) max_abs_scale = abs_scale, max_scale = scale;
  }
  if (max_abs_scale < kGroupMaxEps) {  // written as an all-zero block
    std::memset(out.codes, 0, 256);
    for (int ib = 0; ib < 16; ++ib) out.scales[ib] = 0.0f;
    out.d_dmin[0] = out.d_dmin[1] = 0.0f;
    return;
  }
  const float iscale = -128.f / max_scale;
  const float d = fp16_round(1 / iscale);
  out.d_dmin[0] = d, out.d_dmin[1] = 0.0f;
  for (int j = 0; j < 16; ++j) {
    const int8_t sc = int8_t(std::min(127, nearest_int(iscale * scales[j])));
    const float dj = d * float(sc);
    out.scales[j] = dj;
    if (dj) {
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / dj);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = int8_t(l + 32);
      }
    }
    for (int ii = 0; ii < 16; ++ii) out.codes[16 * j + ii] = uint8_t(L[16 * j + ii]);
  }
}

}  // namespace

QuantizedLinear kquant_rtn(const Tensor& weight_in, const QuantFormat& fmt, const std::string& name,
                           const std::vector<float>& importance) {
  if (fmt.is_iq4()) return iq4_rtn(weight_in, fmt, name, importance);
  QS_ASSERT(fmt.family == FormatFamily::GgmlK, "kquant_rtn of ", fmt.name());
  if (weight_in.ndim() != 2)
    fail_input("tensor ", name, ": expected a 2-D weight [out, in], got ", shape_str(weight_in.shape()));
  const Tensor weight = weight_in.dtype() == DType::F32 ? weight_in : weight_in.to_f32();
  const int64_t out = weight.dim(0), in = weight.dim(1);
  fmt.check_divides(in, name);
  const float* w = weight.data<float>();
  QS_ASSERT(importance.empty() || int64_t(importance.size()) == in, "importance of ", name, ": ",
            importance.size(), " values for ", in, " columns");
  for (int64_t i = 0; i < out * in; ++i)
    if (!std::isfinite(w[i]))
      fail_input("tensor ", name, ": weight contains NaN/Inf (at row ", i / in, ", column ", i % in, ")");
  QuantizedLinear q;
  q.format = fmt;
  q.out_features = out;
  q.in_features = in;
  const int64_t ng = fmt.n_groups(in), nsb = in / kQK_K, per = kQK_K / fmt.group_size;
  q.codes.resize(size_t(out * in));
  q.scales.resize(size_t(out * ng));
  if (fmt.stores_zeros()) q.zeros.resize(size_t(out * ng));
  q.super_scales.resize(size_t(out * nsb * 2));
  q.g_idx.resize(size_t(in));
  for (int64_t c = 0; c < in; ++c) q.g_idx[size_t(c)] = int32_t(c / fmt.group_size);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < out; ++r)
    for (int64_t b = 0; b < nsb; ++b) {
      const size_t g0 = size_t(r * ng + b * per);
      const SuperBlock sb{q.codes.data() + r * in + b * kQK_K, q.scales.data() + g0,
                          q.zeros.empty() ? nullptr : q.zeros.data() + g0,
                          q.super_scales.data() + (r * nsb + b) * 2};
      const float* x = w + r * in + b * kQK_K;
      const float* qw = importance.empty() ? nullptr : importance.data() + b * kQK_K;
      if (fmt.bits == 6) q6k_block(x, qw, sb);
      else if (fmt.bits == 2) qw ? q2k_block_weighted(x, qw, sb) : q2k_block(x, sb);
      else if (fmt.bits == 3) qw ? q3k_block_weighted(x, qw, sb) : q3k_block(x, sb);
      else if (qw) q45k_block_weighted(x, fmt.bits == 5 ? 31 : 15, qw, sb);
      else if (fmt.bits == 5) q45k_block(x, 31, -0.5f, 15, sb);
      else q45k_block(x, 15, -1.f, 20, sb);
    }
  return q;
}

}  // namespace qshard

namespace qshard {

GroupParams ggml_block_weighted_fit_one(const QuantFormat& fmt, const float* x, int64_t stride, const float* qw,
                                        float sigma2) {
  if (fmt.family == FormatFamily::GgmlIQ4NL) return iq4nl_fit_one(x, stride, qw);  // σ² of its own block
  float xb[32], weights[32];
  uint8_t L[32], Laux[32];
  for (int j = 0; j < 32; ++j) {
    xb[j] = x[j * stride];
    if (!std::isfinite(xb[j])) fail_input("weight contains NaN/Inf");
    weights[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
  }
  GroupParams p;
  if (fmt.symmetric) {  // Q4_0, Q5_0: make_qx_quants with nmax 8 / 16; Q8_0 the same with 128
    p.scale = fp16_round(make_qx_quants(32, 1 << (fmt.bits - 1), xb, L, weights));
  } else {  // Q4_1, Q5_1: make_qkx3_quants(-0.9, 0.05, 36)
    float the_min = 0;
    const float d = make_qkx3_quants(32, (1 << fmt.bits) - 1, xb, weights, L, &the_min, Laux, -0.9f, 0.05f, 36);
    p.scale = fp16_round(d);
    p.zero = fp16_round(-the_min);
  }
  return p;
}

}  // namespace qshard
