// The logical float32 values of a tensor in a safetensors file, for convert and inspect.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "tensor/safetensors.h"
#include "tensor/scaled_view.h"
#include "tensor/tensor.h"

namespace fp8lm::cli {

// A scaled tensor NAME stores its scales as NAME_scale_inv: an F32 scalar (per tensor) or a
// grid of block scales (tensor/scaled_view.h says which shapes mean which layout).
inline constexpr std::string_view kScaleInvSuffix = "_scale_inv";

// True when `name` is NAME_scale_inv and NAME is in the file: then it belongs to NAME.
bool is_scale_inv_of_other(const SafetensorsFile& f, const std::string& name);

// The scaled view of floating tensor e with its NAME_scale_inv, if any; throws Error naming
// the file and tensor when the scales fit no layout.
ScaledView file_view(const SafetensorsFile& f, const SafetensorsEntry& e);

struct TensorValues {
  const float* data = nullptr;  // n values: decode(payload) · scale_inv
  size_t n = 0;
  std::optional<Tensor> owned;  // set when the values had to be computed
  ScalingMode mode = ScalingMode::kNone;  // how the file stores them
};

// Values of floating tensor e (f32 tensors without a scale_inv are used in place when
// aligned). Throws Error when NAME_scale_inv fits no layout (a per-tensor scale must be
// finite and positive).
TensorValues tensor_values(const SafetensorsFile& f, const SafetensorsEntry& e);

}  // namespace fp8lm::cli
