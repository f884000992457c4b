// The one view of scaled data: a payload (any dtype), how its values are scaled (none, one
// scale per tensor, or per block: 1×128, 128×1, 128×128, MX 1×32), and a live reference to the
// scale storage — whoever updates the scales in place is seen by every holder of the view.
// Values are x ≈ decode(q) · s, with s the element's scale (docs/numerics.md, Block scaling).
// A tensor of rank ≥ 2 is a matrix [product of leading dims, last dim]; rank ≤ 1 is one row.
#pragma once

#include <string>

#include "kernels/gemm.h"
#include "numerics/block_scales.h"
#include "tensor/tensor.h"

namespace fp8lm {

struct ScaledView {
  ConstTensorView data;
  ScalingMode mode = ScalingMode::kNone;
  // kTensor: one F32 s (a scale_inv); block modes: the grid, F32 or E8M0.
  ConstTensorView scales;

  size_t rows() const;
  size_t cols() const;
  // The block scales as kernels take them (no data for kNone/kTensor).
  BlockScales blocks() const;
  // s of a per-tensor view (1 for kNone).
  float tensor_scale() const;
  // As a GEMM operand (op(X) = Xᵀ when transposed).
  kernels::GemmOperand operand(bool transposed = false) const;
};

// Shape of the scale grid of a `mode` view of data shaped `shape` ([] for kNone, [1] tensor).
Shape scale_grid_shape(const Shape& shape, ScalingMode mode);

// The view of a tensor stored with a companion scale tensor (as files hold them: NAME and
// NAME_scale_inv): the mode follows from the two shapes and the scale dtype — an F32 scalar
// or [1] is per tensor; F32 [ceil(r/128), ceil(c/128)] 128×128 blocks, [r, ceil(c/128)] 1×128
// tiles, [ceil(r/128), c] 128×1 tiles; E8M0 (or U8) [r, ceil(c/32)] MX. `scales` may be null
// (unscaled). Throws Error naming `what` when the scales fit no layout.
ScaledView scaled_view(const ConstTensorView& data, const ConstTensorView* scales,
                       const std::string& what);

// dst (numel floats) = the view's values.
void dequantize(float* dst, const ScaledView& v);

}  // namespace fp8lm
