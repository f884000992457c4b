#include "tensor/scaling.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "kernels/cast.h"

namespace fp8lm {

float format_max(DType format) {
  switch (format) {
    case DType::kE4M3:
    case DType::kE5M2:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF32:  // an FP32 or BF16 optimizer state: its scale stays 1
      return static_cast<float>(info(format).max_finite);
    default:
      fail("scaled tensors use e4m3, e5m2, f16, bf16 or f32, not ", dtype_name(format));
  }
}

std::optional<float> compute_scale(float amax, float fmax, int margin, bool pow2) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return std::nullopt;
  constexpr int kMinExp = -126, kMaxExp = 126;
  if (pow2) {
    // floor(log2(fmax / amax)) exactly: the double quotient of two floats cannot round
    // across a power of two (their 24-bit significands keep it > 2^-25 away relatively).
    const double ratio = static_cast<double>(fmax) / static_cast<double>(amax);
    const int e = std::clamp(std::ilogb(ratio) - margin, kMinExp, kMaxExp);
    return std::ldexp(1.0f, e);
  }
  const double s = static_cast<double>(fmax) / amax / std::ldexp(1.0, margin);
  return static_cast<float>(std::clamp(s, std::ldexp(1.0, kMinExp), std::ldexp(1.0, kMaxExp)));
}

ScalingMeta::ScalingMeta(ScalingRecipe r) : recipe(r) {
  format_max(r.format);  // validates the format
  FP8LM_CHECK(r.window >= 1, "amax history window must be >= 1, got ", r.window);
  amax_history.assign(static_cast<size_t>(r.window), 0.0f);
}

bool ScalingMeta::needs_jit() const {
  return recipe.timing == ScalingTiming::kJustInTime || jit_next || history_filled < recipe.window;
}

void ScalingMeta::set_scale_from_amax(float amax) {
  const auto s = compute_scale(amax, format_max(recipe.format), recipe.margin, recipe.pow2);
  if (!s) return;
  scale = *s;
  scale_inv = 1.0f / *s;
}

float ScalingMeta::history_max() const {
  float m = 0.0f;
  for (int i = 0; i < history_filled; ++i) m = std::max(m, amax_history[static_cast<size_t>(i)]);
  return m;
}

void ScalingMeta::set_scale_from_history() { set_scale_from_amax(history_max()); }

void ScalingMeta::record_amax(float amax) {
  ++counter;
  if (!std::isfinite(amax)) {
    ++nonfinite_amax;
    jit_next = true;
    return;
  }
  if (amax == 0.0f) ++zero_amax;
  jit_next = false;
  amax_history[static_cast<size_t>(history_pos)] = amax;
  history_pos = (history_pos + 1) % recipe.window;
  history_filled = std::min(history_filled + 1, recipe.window);
}

float quantize(ScalingMeta& m, void* dst, const float* src, size_t n, const AmaxShare& share,
               const float* src_amax) {
  float amax;
  if (m.needs_jit()) {
    amax = src_amax != nullptr ? *src_amax : kernels::amax(src, n);
    if (share) amax = share(amax);
    m.set_scale_from_amax(amax);
    kernels::quantize(dst, m.recipe.format, src, n, m.scale, m.recipe.saturate);
  } else {
    m.set_scale_from_history();
    amax = kernels::quantize(dst, m.recipe.format, src, n, m.scale, m.recipe.saturate);
    if (share) amax = share(amax);
  }
  m.record_amax(amax);
  return amax;
}

ScaledTensor::ScaledTensor(Shape shape, DType format, ScalingMode block_mode,
                           MemCategory category)
    : data(format, shape, category),
      meta(ScalingRecipe{format, ScalingTiming::kJustInTime}),
      mode(block_mode),
      scales(block_shape(block_mode).scale_dtype, scale_grid_shape(shape, block_mode), category) {
  FP8LM_CHECK(block_shape(block_mode).cols != 0, "ScaledTensor: ", scaling_mode_name(block_mode),
              " is not a block mode");
}

ScaledView ScaledTensor::view() const { return const_cast<ScaledTensor*>(this)->mut_view(); }

MutableScaledView ScaledTensor::mut_view() {
  if (mode == ScalingMode::kTensor)
    return {data.view(), mode, TensorView{&meta.scale_inv, DType::kF32, Shape{1}}};
  return {data.view(), mode, scales.view()};
}

float quantize(ScaledTensor& t, const float* src, const AmaxShare& share,
               const float* src_amax) {
  if (t.mode == ScalingMode::kTensor)
    return quantize(t.meta, t.data.data(), src, t.data.numel(), share, src_amax);
  // Block scales are per block: nothing to share but the recorded amax.
  float amax = kernels::quantize_blocks(t.mut_view(), src, t.meta.recipe.saturate);
  if (share) amax = share(amax);
  t.meta.record_amax(amax);
  return amax;
}

void dequantize(float* dst, const ScaledTensor& t) { kernels::dequantize(dst, t.view()); }

}  // namespace fp8lm
