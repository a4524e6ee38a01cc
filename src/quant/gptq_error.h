// The output error tr(ΔW H ΔWᵀ) of a GPTQ result from GPTQ's own error terms, in
// O(out·in) instead of the O(out·in²) product with H.
//
// GPTQ quantizes column j from the updated weights and propagates err_j = (w'_j − q_j)/U_jj
// along row j of U (H_d⁻¹ = UᵀU, H_d = H with dead diagonals set to 1, plus damp·I), so
// W_dz − Q = E·U exactly (W_dz: dead columns zeroed) and, since U H_d Uᵀ = I,
//   tr(ΔW' H_d ΔW'ᵀ) = Σ E² = 2·loss.
// H_d differs from H by damp on the diagonal and 1 on dead diagonals (whose rows of H
// are zero), so tr(ΔW H ΔWᵀ) = 2·loss − damp·‖ΔW'‖² − ‖ΔW'[:, dead]‖², with ΔW = W − Q
// and ΔW' = W_dz − Q (equal off the dead columns, where H sees nothing anyway).
// In fp32 this matches the float64 product to ≤ 1.3e-6 relative on test_gptq's cases
// (every GPTQ mode, a dead column, an escalated damping); the test holds it to 1e-4.
#pragma once

#include <cstdint>

namespace qshard {

// w, w_hat: [rows, in] row-major (original and dequantized rows); H's diagonal element j
// at hdiag[j·hdiag_step] (H itself: step in + 1); loss: GptqResult::loss over these rows;
// damp_abs: GptqResult::damp_abs.
double gptq_output_error(const float* w, const float* w_hat, int64_t rows, int64_t in, const float* hdiag,
                         int64_t hdiag_step, double loss, double damp_abs);

}  // namespace qshard
