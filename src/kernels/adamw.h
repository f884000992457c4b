// The AdamW update of one tensor whose master weights and moments are stored in narrow
// formats with per-tensor scales (docs/numerics.md), and the sum of squares for gradient clipping.
// Arithmetic is FP32; stored values are q · scale_inv. Backend-neutral: pointers, dtypes,
// scales.
#pragma once

#include <cstddef>

#include "numerics/dtype.h"

namespace fp8lm::kernels {

// A stored tensor: values are data[i] · scale_inv in dtype (f32, f16, bf16 or e4m3).
struct StoredRef {
  void* data;
  DType dtype;
  float scale_inv;
};

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

// Pass 1: the amaxes the updated master, m1 and m2 would have (nothing is written).
// NaN in any result means a non-finite value appeared.
AdamWScales adamw_amax(const StoredRef& master, const StoredRef& m1, const StoredRef& m2,
                       const void* grad, DType grad_type, float grad_scale_inv, size_t n,
                       const AdamWArgs& a);
// Pass 2: recomputes the same update and stores it: master, m1, m2 get the new values cast
// with `scale` (q = cast(x · scale), saturating; FP32 states ignore it). The caller then sets
// each state's scale_inv to 1/scale.
void adamw_apply(const StoredRef& master, const StoredRef& m1, const StoredRef& m2,
                 const void* grad, DType grad_type, float grad_scale_inv, size_t n,
                 const AdamWArgs& a, const AdamWScales& scale);

namespace detail {
// What the per-target kernels receive: AdamWArgs plus the stored scales.
struct AdamWKernelArgs {
  float lr, beta1, beta2, eps, decay, bias_corr1, bias_corr2, grad_mul;
  float master_inv, m1_inv, m2_inv, grad_inv;
  float master_scale, m1_scale, m2_scale;  // pass 2
};
}  // namespace detail

// Σ (grad[i] · scale_inv)² in double (for global-norm clipping); inf/NaN propagate.
double sum_squares(const void* grad, DType grad_type, size_t n, float scale_inv);

}  // namespace fp8lm::kernels
