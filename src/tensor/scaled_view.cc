#include "tensor/scaled_view.h"

#include <cmath>
#include <cstring>

#include "core/check.h"

namespace fp8lm {

size_t detail::matrix_rows(const Shape& s) {
  size_t r = 1;
  for (int i = 0; i + 1 < s.rank(); ++i) r *= static_cast<size_t>(s[i]);
  return r;
}
size_t detail::matrix_cols(const Shape& s) {
  return s.rank() == 0 ? 1 : static_cast<size_t>(s[s.rank() - 1]);
}

Shape scale_grid_shape(const Shape& shape, ScalingMode mode) {
  if (mode == ScalingMode::kNone) return Shape{};
  if (mode == ScalingMode::kTensor) return Shape{1};
  const BlockShape b = block_shape(mode);
  return Shape{static_cast<int64_t>(grid_extent(detail::matrix_rows(shape), b.rows)),
               static_cast<int64_t>(grid_extent(detail::matrix_cols(shape), b.cols))};
}

ScaledView scaled_view(const ConstTensorView& data, const ConstTensorView* scales,
                       const std::string& what) {
  ScaledView v{data, ScalingMode::kNone, {}};
  if (scales == nullptr) return v;
  v.scales = *scales;
  const bool e8m0 = scales->dtype == DType::kE8M0 || scales->dtype == DType::kU8;
  if (scales->dtype != DType::kF32 && !e8m0)
    fail(what, ": scales must be F32, F8_E8M0 or U8, found ", dtype_name(scales->dtype));
  if (scales->shape.rank() > 2)
    fail(what, ": scales of rank ", scales->shape.rank(), " (", scales->shape.str(),
         ") fit no block layout");
  if (!e8m0 && scales->numel() == 1 && scales->shape.rank() <= 1) {
    v.mode = ScalingMode::kTensor;
    const float s = v.tensor_scale();
    if (!(s > 0.0f) || !std::isfinite(s))
      fail(what, ": the scale must be finite and positive, found ", s);
    return v;
  }
  const Shape& got = scales->shape;
  const ScalingMode candidates[] = {ScalingMode::kBlock128, ScalingMode::kRows1x128,
                                    ScalingMode::kCols128x1, ScalingMode::kMx32,
                                    ScalingMode::kMx32x1};
  for (ScalingMode m : candidates) {
    if ((block_shape(m).scale_dtype == DType::kE8M0) != e8m0) continue;
    const Shape want = scale_grid_shape(data.shape, m);
    const bool same = got == want ||
                      (got.rank() == 1 && want[0] == 1 && got[0] == want[1]);  // one grid row
    if (same) {
      v.mode = m;
      return v;
    }
  }
  fail(what, ": scales ", dtype_name(scales->dtype), " ", got.str(), " fit no block layout of ",
       data.shape.str(), " (128x128: ", scale_grid_shape(data.shape, ScalingMode::kBlock128).str(),
       ", 1x128: ", scale_grid_shape(data.shape, ScalingMode::kRows1x128).str(), ", mx32 e8m0: ",
       scale_grid_shape(data.shape, ScalingMode::kMx32).str(), ")");
}

}  // namespace fp8lm
