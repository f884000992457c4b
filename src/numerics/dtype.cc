#include "numerics/dtype.h"

namespace fp8lm {

std::optional<DType> dtype_from_name(std::string_view name) {
  for (int i = 0; i < kNumDTypes; ++i)
    if (kDTypeInfo[i].name == name) return static_cast<DType>(i);
  return std::nullopt;
}

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  for (int i = 0; i < kNumDTypes; ++i)
    if (kDTypeInfo[i].safetensors == name) return static_cast<DType>(i);
  return std::nullopt;
}

}  // namespace fp8lm
