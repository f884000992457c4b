// Softmax cross-entropy over logit rows, with the gradient written in place.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cross_entropy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/vec-inl.h"
#include "numerics/exponent_range.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
using DF = hn::ScalableTag<float>;
constexpr size_t kLanes = hn::MaxLanes(DF());

// The max of the first V columns (−inf when V = 0).
float RowMax(const float* x, size_t V) {
  const DF df;
  const auto neg_inf = hn::Set(df, -std::numeric_limits<float>::infinity());
  auto vmax = neg_inf;
  for (size_t c = 0; c < V; c += kLanes) {
    const size_t n = std::min(kLanes, V - c);
    auto v = LoadPart(df, x + c, n);
    if (n < kLanes) v = hn::IfThenElse(hn::FirstN(df, n), v, neg_inf);
    vmax = hn::Max(vmax, v);
  }
  return hn::GetLane(hn::MaxOfLanes(df, vmax));
}

// Σ exp(x − m) over the first V columns; kStore also writes exp(x − m) to out (the softmax
// numerators, kept for the gradient so each logit goes through exp once).
template <bool kStore>
float ExpSum(const float* x, size_t V, float m, float* out) {
  const DF df;
  const auto vm = hn::Set(df, m);
  Sums32 vsum(df);
  for (size_t c = 0; c < V; c += kLanes) {
    const size_t n = std::min(kLanes, V - c);
    auto e = hwy::HWY_NAMESPACE::Exp(df, hn::Sub(LoadPart(df, x + c, n), vm));
    if (n < kLanes) e = hn::IfThenElseZero(hn::FirstN(df, n), e);
    if constexpr (kStore) StorePart(df, e, out + c, n);
    vsum.at(c) = hn::Add(vsum.at(c), e);
  }
  return vsum.total();
}

// x[0, V) ← x · mul; x[V, Vp) ← 0. With `bounds`, the new values' exponents are added to it.
void ScaleRow(float* x, size_t V, size_t Vp, float mul, ExponentBounds<DF>* bounds) {
  const DF df;
  const auto vmul = hn::Set(df, mul);
  for (size_t c = 0; c < V; c += kLanes) {
    const size_t n = std::min(kLanes, V - c);
    const auto y = hn::Mul(LoadPart(df, x + c, n), vmul);  // lanes past n are 0
    if (bounds != nullptr) bounds->add(y);
    StorePart(df, y, x + c, n);
  }
  std::fill(x + V, x + Vp, 0.0f);
}

// Returns the gradient's exponent bounds (numerics/exponent_range.h) when `bounds` is set.
uint32_t CrossEntropyRows(float* logits, float* losses, const int32_t* targets, size_t rows,
                          size_t V, size_t Vp, float grad_scale, bool bounds) {
  ExponentBounds<DF> vb{DF()};
  uint32_t fixed = kNoExponentBounds;  // the targets' entries after the subtraction
  for (size_t r = 0; r < rows; ++r) {
    float* x = logits + r * Vp;
    const int32_t target = targets[r];
    if (target < 0) {  // ignored position
      losses[r] = 0.0f;
      if (grad_scale != 0.0f) std::fill(x, x + Vp, 0.0f);
      continue;
    }
    if (grad_scale == 0.0f) {  // the loss only: logits stay as they are
      const float m = RowMax(x, V);
      losses[r] = m + std::log(ExpSum<false>(x, V, m, nullptr)) - x[target];
      continue;
    }
    const float m = RowMax(x, V);
    const float x_target = x[target];
    const float sum = ExpSum<true>(x, V, m, x);
    losses[r] = m + std::log(sum) - x_target;
    // d loss / d x = grad_scale · (softmax − onehot(target)).
    ScaleRow(x, V, Vp, grad_scale / sum, bounds ? &vb : nullptr);
    x[target] -= grad_scale;
    fixed = add_exponent_bounds(fixed, x[target]);  // (its old value stays in vb: a wider range)
  }
  return merge_exponent_bounds(vb.packed(), fixed);
}

// Per row: the max m of the first V columns (−inf when V = 0), Σ exp(x − m), and the
// columns overwritten with exp(x − m).
void LogitExpRows(float* logits, size_t rows, size_t V, size_t Vp, float* max, float* sumexp) {
  for (size_t r = 0; r < rows; ++r) {
    float* x = logits + r * Vp;
    max[r] = RowMax(x, V);
    sumexp[r] = V == 0 ? 0.0f : ExpSum<true>(x, V, max[r], x);
  }
}

uint32_t ScaleRows(float* logits, size_t rows, size_t V, size_t Vp, const float* mul,
                   bool bounds) {
  ExponentBounds<DF> vb{DF()};
  for (size_t r = 0; r < rows; ++r)
    ScaleRow(logits + r * Vp, V, Vp, mul[r], bounds ? &vb : nullptr);
  return vb.packed();
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
HWY_EXPORT(LogitExpRows);
HWY_EXPORT(ScaleRows);

namespace kernels {

void softmax_cross_entropy(float* logits, float* losses, const int32_t* targets, size_t rows,
                           size_t V, size_t Vp, float grad_scale, ExponentRange* grad_exps) {
  FP8LM_CHECK(V > 0 && V <= Vp, "cross-entropy: need 0 < V <= Vp, got V = ", V, ", Vp = ", Vp);
  for (size_t r = 0; r < rows; ++r)
    FP8LM_CHECK(targets[r] < static_cast<int32_t>(V), "cross-entropy: target ", targets[r],
                " out of range for vocabulary ", V);
  std::vector<uint32_t> bounds(chunk_count(rows, 1), kNoExponentBounds);
  parallel_for(rows, 1, 1, [&](size_t c, size_t r0, size_t r1) {
    bounds[c] = HWY_DYNAMIC_DISPATCH(CrossEntropyRows)(logits + r0 * Vp, losses + r0,
                                                       targets + r0, r1 - r0, V, Vp, grad_scale,
                                                       grad_exps != nullptr);
  });
  if (grad_exps != nullptr) *grad_exps = exponent_range_of_bounds(bounds);
}

void logit_row_exps(float* logits, size_t rows, size_t V, size_t Vp, float* max, float* sumexp) {
  FP8LM_CHECK(V <= Vp, "logit_row_exps: V = ", V, " > Vp = ", Vp);
  parallel_for(rows, 1, 1, [&](size_t, size_t r0, size_t r1) {
    HWY_DYNAMIC_DISPATCH(LogitExpRows)(logits + r0 * Vp, r1 - r0, V, Vp, max + r0, sumexp + r0);
  });
}

void scale_rows(float* logits, size_t rows, size_t V, size_t Vp, const float* mul,
                ExponentRange* exps) {
  FP8LM_CHECK(V <= Vp, "scale_rows: V = ", V, " > Vp = ", Vp);
  std::vector<uint32_t> bounds(chunk_count(rows, 1), kNoExponentBounds);
  parallel_for(rows, 1, 1, [&](size_t c, size_t r0, size_t r1) {
    bounds[c] = HWY_DYNAMIC_DISPATCH(ScaleRows)(logits + r0 * Vp, r1 - r0, V, Vp, mul + r0,
                                                exps != nullptr);
  });
  if (exps != nullptr) *exps = exponent_range_of_bounds(bounds);
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
