#include "cli/tensor_values.h"

#include <cmath>
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

TensorValues tensor_values(const SafetensorsFile& f, const SafetensorsEntry& e) {
  FP8LM_CHECK(is_float(e.view.dtype), e.name, " is not a floating tensor");
  float scale_inv = 1.0f;
  const SafetensorsEntry* si = f.find(e.name + std::string(kScaleInvSuffix));
  if (si != nullptr) {
    if (si->view.dtype != DType::kF32 || si->view.numel() != 1)
      fail(f.path(), ": ", si->name, " must be an F32 scalar, found ",
           dtype_name(si->view.dtype), " ", si->view.shape.str());
    std::memcpy(&scale_inv, si->view.data, sizeof(float));
    if (!(scale_inv > 0.0f) || !std::isfinite(scale_inv))
      fail(f.path(), ": ", si->name, " must be finite and positive, found ", scale_inv);
  }
  TensorValues v;
  v.n = e.view.numel();
  const bool aligned = reinterpret_cast<uintptr_t>(e.view.data) % alignof(float) == 0;
  if (e.view.dtype == DType::kF32 && si == nullptr && aligned) {
    v.data = e.view.as<float>();
    return v;
  }
  v.owned.emplace(DType::kF32, e.view.shape, MemCategory::kWorkspace);
  kernels::dequantize(v.owned->as<float>(), e.view.data, e.view.dtype, v.n, scale_inv);
  v.data = v.owned->as<float>();
  return v;
}

}  // namespace fp8lm::cli
