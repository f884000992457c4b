// The AdamW update of one tensor whose master weights and moments are stored in narrow
// formats with per-tensor scales (docs/numerics.md), and the sum of squares for gradient clipping.
// Arithmetic is FP32; stored values are q · s, s the view's per-tensor scale. Backend-neutral:
// views (pointer, dtype, shape, live scale).
#pragma once

#include <cstddef>

#include "numerics/dtype.h"
#include "tensor/scaled_view.h"

namespace fp8lm::kernels {

struct AdamWArgs {
  float lr;
  float beta1, beta2, eps;
  float decay;       // lr · weight_decay for decayed tensors, else 0
  float bias_corr1;  // 1 − β1^t
  float bias_corr2;  // 1 − β2^t
  float grad_mul;    // applied to the dequantized gradient (clipping, 1/accumulation)
};

// New amaxes of the three states, or scales to store them with.
struct AdamWScales {
  float master, m1, m2;
};

// The states are per-tensor (or unscaled) views of f32, f16, bf16 or e4m3 of one size; the
// gradient a per-tensor view of f32, bf16 or e4m3 of the same size.
// Pass 1: the amaxes the updated master, m1 and m2 would have (nothing is written).
// NaN in any result means a non-finite value appeared.
AdamWScales adamw_amax(const ScaledView& master, const ScaledView& m1, const ScaledView& m2,
                       const ScaledView& grad, const AdamWArgs& a);
// Pass 2: recomputes the same update and stores it: master, m1, m2 get the new values cast
// with `scale` (q = cast(x · scale), saturating; FP32 states ignore it). The caller then sets
// each state's scale to 1/scale.
void adamw_apply(const MutableScaledView& master, const MutableScaledView& m1,
                 const MutableScaledView& m2, const ScaledView& grad, const AdamWArgs& a,
                 const AdamWScales& scale);

namespace detail {
// What the per-target kernels receive: AdamWArgs plus the stored scales.
struct AdamWKernelArgs {
  float lr, beta1, beta2, eps, decay, bias_corr1, bias_corr2, grad_mul;
  float master_inv, m1_inv, m2_inv, grad_inv;
  float master_scale, m1_scale, m2_scale;  // pass 2
};
// sum_squares adds FP32 sums of blocks of this many values (fixed, whatever the threads).
inline constexpr size_t kSquaresBlock = 1024;
}  // namespace detail

// Whether the kernels take states stored as master, m1, m2 with gradients as grad (the
// levels' formats and the precision-decoupling ablations).
bool adamw_supported(DType master, DType m1, DType m2, DType grad);

// Σ (grad[i] · s)² in double (for global-norm clipping) of a per-tensor view; inf/NaN propagate.
double sum_squares(const ScaledView& grad);

}  // namespace fp8lm::kernels
