#include "numerics/block_scales.h"

#include <cmath>

namespace fp8lm {

std::string_view scaling_mode_name(ScalingMode m) {
  switch (m) {
    case ScalingMode::kNone:
      return "none";
    case ScalingMode::kTensor:
      return "tensor";
    case ScalingMode::kRows1x128:
      return "1x128";
    case ScalingMode::kCols128x1:
      return "128x1";
    case ScalingMode::kBlock128:
      return "128x128";
    case ScalingMode::kMx32:
      return "mx32";
    case ScalingMode::kMx32x1:
      return "mx32x1";
  }
  return "?";
}

BlockShape block_shape(ScalingMode m) {
  switch (m) {
    case ScalingMode::kRows1x128:
      return {1, 128, DType::kF32};
    case ScalingMode::kCols128x1:
      return {128, 1, DType::kF32};
    case ScalingMode::kBlock128:
      return {128, 128, DType::kF32};
    case ScalingMode::kMx32:
      return {1, 32, DType::kE8M0};
    case ScalingMode::kMx32x1:
      return {32, 1, DType::kE8M0};
    default:
      return {};
  }
}

float block_scale(float amax, float fmax) {
  if (!std::isfinite(amax)) return std::nanf("");
  if (amax == 0.0f) return 1.0f;
  // fmax · 2^e ≥ amax with e minimal; ldexp of fmax is exact in this range.
  int e = std::ilogb(amax) - std::ilogb(fmax);
  while (std::ldexp(fmax, e) < amax) ++e;
  while (e > -126 && std::ldexp(fmax, e - 1) >= amax) --e;
  e = std::max(-126, std::min(126, e));
  return std::ldexp(1.0f, e);
}

}  // namespace fp8lm
