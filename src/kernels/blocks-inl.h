// Per-target loops over a row cut into blocks of `bc` elements (bc == 1: every element its
// own block), each with its own factor: applying block scales to decoded values (GEMM
// packing, dequantize) and measuring block amaxes (block-scaled casts).

#if defined(FP8LM_KERNELS_BLOCKS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FP8LM_KERNELS_BLOCKS_INL_H_
#undef FP8LM_KERNELS_BLOCKS_INL_H_
#else
#define FP8LM_KERNELS_BLOCKS_INL_H_
#endif

#include <algorithm>
#include <bit>
#include <cstring>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// p[t] *= f[(c0 + t) / bc] for t < n: the run p holds columns c0.. of a row whose block
// factors are f. Products by powers of two are exact, so this is the exact dequantization.
HWY_INLINE void ScaleRun(float* HWY_RESTRICT p, size_t n, size_t c0, const float* HWY_RESTRICT f,
                         size_t bc) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  if (bc == 1) {
    size_t t = 0;
    for (; t + N <= n; t += N)
      hn::StoreU(hn::Mul(hn::LoadU(df, p + t), hn::LoadU(df, f + c0 + t)), df, p + t);
    for (; t < n; ++t) p[t] *= f[c0 + t];
    return;
  }
  for (size_t t = 0; t < n;) {
    const size_t block = (c0 + t) / bc;
    const size_t end = std::min(n, (block + 1) * bc - c0);
    const auto v = hn::Set(df, f[block]);
    for (; t + N <= end; t += N) hn::StoreU(hn::Mul(hn::LoadU(df, p + t), v), df, p + t);
    for (; t < end; ++t) p[t] *= f[block];
  }
}

// amax_bits[j] = max(amax_bits[j], bits of max |x| over block j of the row x[0..n)), as in
// the per-tensor casts (NaN sorts above inf, so it propagates).
HWY_INLINE void BlockAmaxRun(const float* HWY_RESTRICT x, size_t n, size_t bc,
                             uint32_t* HWY_RESTRICT amax_bits) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  const size_t N = hn::Lanes(df);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  auto abs_bits = [&](size_t t) { return hn::BitCast(di, hn::And(hn::BitCast(du, hn::LoadU(df, x + t)), abs_mask)); };
  if (bc == 1) {
    auto* m = reinterpret_cast<int32_t*>(amax_bits);
    size_t t = 0;
    for (; t + N <= n; t += N) hn::StoreU(hn::Max(hn::LoadU(di, m + t), abs_bits(t)), di, m + t);
    for (; t < n; ++t) amax_bits[t] = std::max(amax_bits[t], std::bit_cast<uint32_t>(x[t]) & 0x7FFFFFFFu);
    return;
  }
  for (size_t t = 0; t < n;) {
    const size_t block = t / bc;
    const size_t end = std::min(n, (block + 1) * bc);
    auto m = hn::Zero(di);
    for (; t + N <= end; t += N) m = hn::Max(m, abs_bits(t));
    uint32_t r = static_cast<uint32_t>(hn::GetLane(hn::MaxOfLanes(di, m)));
    for (; t < end; ++t) r = std::max(r, std::bit_cast<uint32_t>(x[t]) & 0x7FFFFFFFu);
    amax_bits[block] = std::max(amax_bits[block], r);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#endif  // include guard
