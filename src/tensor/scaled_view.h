// The one view of scaled data: a payload (any dtype), how its values are scaled (none, one
// scale per tensor, or per block: 1×128, 128×1, 128×128, MX 1×32), and a live reference to the
// scale storage — whoever updates the scales in place is seen by every holder of the view.
// Values are x ≈ decode(q) · s, with s the element's scale (docs/numerics.md, Block scaling).
// A tensor of rank ≥ 2 is a matrix [product of leading dims, last dim]; rank ≤ 1 is one row.
//
// Two flavours of the same view, as with std::span<T> and std::span<const T>: ScaledView reads
// (the model reading masters, the optimizer reading gradients, files), MutableScaledView may
// also write payload and scales in place (collectives replacing gradients by their mean, the
// optimizer updating its states); it converts to a ScaledView.
// This header sits below kernels/ (which take views) and knows no kernel.
#pragma once

#include <cstring>
#include <string>
#include <type_traits>

#include "numerics/block_scales.h"
#include "tensor/tensor.h"

namespace fp8lm {

namespace detail {
size_t matrix_rows(const Shape& s);
size_t matrix_cols(const Shape& s);
}  // namespace detail

template <bool kMutable>
struct BasicScaledView {
  using View = std::conditional_t<kMutable, TensorView, ConstTensorView>;
  View data;
  ScalingMode mode = ScalingMode::kNone;
  // kTensor: one F32 s (a scale_inv); block modes: the grid, F32 or E8M0.
  View scales;

  size_t numel() const { return data.numel(); }
  size_t rows() const { return detail::matrix_rows(data.shape); }
  size_t cols() const { return detail::matrix_cols(data.shape); }
  // The block scales as kernels take them (no data for kNone/kTensor).
  BlockScales blocks() const {
    if (mode == ScalingMode::kNone || mode == ScalingMode::kTensor) return {};
    BlockShape shape = block_shape(mode);
    shape.scale_dtype = scales.dtype == DType::kU8 ? DType::kE8M0 : scales.dtype;
    return {scales.data, shape, 0};
  }
  // s of a per-tensor view (1 for kNone). Read through memcpy: a file's scalar may be unaligned.
  float tensor_scale() const {
    if (mode != ScalingMode::kTensor) return 1.0f;
    float s = 1.0f;
    std::memcpy(&s, scales.data, sizeof s);
    return s;
  }
  // Stores the per-tensor s (mutable views of kTensor mode only).
  void set_tensor_scale(float s) const
    requires kMutable
  {
    FP8LM_CHECK(mode == ScalingMode::kTensor, "set_tensor_scale on a ",
                scaling_mode_name(mode), " view");
    std::memcpy(scales.data, &s, sizeof s);
  }
  operator BasicScaledView<false>() const  // NOLINT: implicit, as span<T> → span<const T>
    requires kMutable
  {
    return {data, mode, scales};
  }
};

using ScaledView = BasicScaledView<false>;
using MutableScaledView = BasicScaledView<true>;

// A per-tensor view whose s lives at *scale (an unscaled one when scale is null).
inline ScaledView tensor_view(const void* data, DType dtype, Shape shape, const float* scale) {
  if (scale == nullptr) return {{data, dtype, shape}, ScalingMode::kNone, {}};
  return {{data, dtype, shape}, ScalingMode::kTensor, {scale, DType::kF32, Shape{1}}};
}
inline MutableScaledView tensor_view(void* data, DType dtype, Shape shape, float* scale) {
  if (scale == nullptr) return {{data, dtype, shape}, ScalingMode::kNone, {}};
  return {{data, dtype, shape}, ScalingMode::kTensor, {scale, DType::kF32, Shape{1}}};
}

// Shape of the scale grid of a `mode` view of data shaped `shape` ([] for kNone, [1] tensor).
Shape scale_grid_shape(const Shape& shape, ScalingMode mode);

// The view of a tensor stored with a companion scale tensor (as files hold them: NAME and
// NAME_scale_inv): the mode follows from the two shapes and the scale dtype — an F32 scalar
// or [1] is per tensor; F32 [ceil(r/128), ceil(c/128)] 128×128 blocks, [r, ceil(c/128)] 1×128
// tiles, [ceil(r/128), c] 128×1 tiles; E8M0 (or U8) [r, ceil(c/32)] MX. `scales` may be null
// (unscaled). Throws Error naming `what` when the scales fit no layout.
ScaledView scaled_view(const ConstTensorView& data, const ConstTensorView* scales,
                       const std::string& what);

}  // namespace fp8lm
