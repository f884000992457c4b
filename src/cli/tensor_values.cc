#include "cli/tensor_values.h"

#include <cstdint>
#include <cstring>

#include "core/check.h"
#include "kernels/cast.h"

namespace fp8lm::cli {

bool is_scale_inv_of_other(const SafetensorsFile& f, const std::string& name) {
  if (name.size() <= kScaleInvSuffix.size() || !name.ends_with(kScaleInvSuffix)) return false;
  return f.find(std::string_view(name).substr(0, name.size() - kScaleInvSuffix.size())) !=
         nullptr;
}

ScaledView file_view(const SafetensorsFile& f, const SafetensorsEntry& e) {
  FP8LM_CHECK(is_float(e.view.dtype), e.name, " is not a floating tensor");
  const SafetensorsEntry* si = f.find(e.name + std::string(kScaleInvSuffix));
  return scaled_view(e.view, si ? &si->view : nullptr, f.path() + ": " + e.name + std::string(kScaleInvSuffix));
}

TensorValues tensor_values(const SafetensorsFile& f, const SafetensorsEntry& e) {
  const ScaledView sv = file_view(f, e);
  TensorValues v;
  v.n = e.view.numel();
  v.mode = sv.mode;
  const bool aligned = reinterpret_cast<uintptr_t>(e.view.data) % alignof(float) == 0;
  if (e.view.dtype == DType::kF32 && sv.mode == ScalingMode::kNone && aligned) {
    v.data = e.view.as<float>();
    return v;
  }
  v.owned.emplace(DType::kF32, e.view.shape, MemCategory::kWorkspace);
  kernels::dequantize(v.owned->as<float>(), sv);
  v.data = v.owned->as<float>();
  return v;
}

}  // namespace fp8lm::cli
