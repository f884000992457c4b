// The logical float32 values of a tensor in a safetensors file, for convert and inspect.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "tensor/safetensors.h"
#include "tensor/tensor.h"

namespace fp8lm::cli {

// A scaled tensor NAME stores its dequantization factor as the F32 scalar NAME_scale_inv.
inline constexpr std::string_view kScaleInvSuffix = "_scale_inv";

// True when `name` is NAME_scale_inv and NAME is in the file: then it belongs to NAME.
bool is_scale_inv_of_other(const SafetensorsFile& f, const std::string& name);

struct TensorValues {
  const float* data = nullptr;  // n values: decode(payload) · scale_inv
  size_t n = 0;
  std::optional<Tensor> owned;  // set when the values had to be computed
};

// Values of floating tensor e (f32 tensors without a scale_inv are used in place when
// aligned). Throws Error when NAME_scale_inv is not a finite, positive F32 scalar.
TensorValues tensor_values(const SafetensorsFile& f, const SafetensorsEntry& e);

}  // namespace fp8lm::cli
