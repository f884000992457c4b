// Softmax cross-entropy over logit rows, with the gradient written in place.
#include <algorithm>
#include <cmath>
#include <limits>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cross_entropy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/vec-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
using DF = hn::ScalableTag<float>;
constexpr size_t kLanes = hn::MaxLanes(DF());

void CrossEntropyRows(float* logits, float* losses, const int32_t* targets, size_t rows, size_t V,
                      size_t Vp, float grad_scale) {
  const DF df;
  for (size_t r = 0; r < rows; ++r) {
    float* x = logits + r * Vp;
    const int32_t target = targets[r];
    if (target < 0) {  // ignored position
      losses[r] = 0.0f;
      if (grad_scale != 0.0f) std::fill(x, x + Vp, 0.0f);
      continue;
    }
    auto vmax = hn::Set(df, -std::numeric_limits<float>::infinity());
    for (size_t c = 0; c < V; c += kLanes) {
      const size_t n = std::min(kLanes, V - c);
      auto v = LoadPart(df, x + c, n);
      if (n < kLanes)
        v = hn::IfThenElse(hn::FirstN(df, n), v, hn::Set(df, -std::numeric_limits<float>::infinity()));
      vmax = hn::Max(vmax, v);
    }
    const float m = hn::GetLane(hn::MaxOfLanes(df, vmax));
    const auto vm = hn::Set(df, m);
    auto vsum = hn::Zero(df);
    for (size_t c = 0; c < V; c += kLanes) {
      const size_t n = std::min(kLanes, V - c);
      auto e = hwy::HWY_NAMESPACE::Exp(df, hn::Sub(LoadPart(df, x + c, n), vm));
      if (n < kLanes) e = hn::IfThenElseZero(hn::FirstN(df, n), e);
      vsum = hn::Add(vsum, e);
    }
    const float sum = hn::GetLane(hn::SumOfLanes(df, vsum));
    const float lse = m + std::log(sum);
    losses[r] = lse - x[target];
    if (grad_scale == 0.0f) continue;
    const auto vlse = hn::Set(df, lse), vg = hn::Set(df, grad_scale);
    for (size_t c = 0; c < V; c += kLanes) {
      const size_t n = std::min(kLanes, V - c);
      const auto p = hwy::HWY_NAMESPACE::Exp(df, hn::Sub(LoadPart(df, x + c, n), vlse));
      StorePart(df, hn::Mul(p, vg), x + c, n);
    }
    x[target] -= grad_scale;
    std::fill(x + V, x + Vp, 0.0f);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/check.h"
#include "core/parallel.h"
#include "kernels/nn.h"

namespace fp8lm {
HWY_EXPORT(CrossEntropyRows);

namespace kernels {

void softmax_cross_entropy(float* logits, float* losses, const int32_t* targets, size_t rows,
                           size_t V, size_t Vp, float grad_scale) {
  FP8LM_CHECK(V > 0 && V <= Vp, "cross-entropy: need 0 < V <= Vp, got V = ", V, ", Vp = ", Vp);
  for (size_t r = 0; r < rows; ++r)
    FP8LM_CHECK(targets[r] < static_cast<int32_t>(V), "cross-entropy: target ", targets[r],
                " out of range for vocabulary ", V);
  parallel_for(rows, 1, 1, [&](size_t, size_t r0, size_t r1) {
    HWY_DYNAMIC_DISPATCH(CrossEntropyRows)(logits + r0 * Vp, losses + r0, targets + r0, r1 - r0,
                                           V, Vp, grad_scale);
  });
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
