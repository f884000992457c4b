// The per-target quantize loop (float32 → narrow codes with one scale and a fused amax),
// shared by the per-tensor casts (quantize.cc) and the block-scaled ones (block_cast.cc).

#if defined(FP8LM_KERNELS_QUANTIZE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FP8LM_KERNELS_QUANTIZE_INL_H_
#undef FP8LM_KERNELS_QUANTIZE_INL_H_
#else
#define FP8LM_KERNELS_QUANTIZE_INL_H_
#endif

#include <algorithm>
#include <cstring>

#include "hwy/highway.h"
#include "kernels/codec-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {

// Returns the amax as binary32 bits of |x| (integer max of the bits orders non-negative
// floats, and NaN bits sort above inf, so NaN propagates).
template <FloatFormat F>
uint32_t QuantizeT(void* HWY_RESTRICT out, const float* HWY_RESTRICT in, size_t n, float scale,
                   bool saturate) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  constexpr size_t kOutBytes = F.bits / 8;
  const size_t N = hn::Lanes(df);
  const uint32_t overflow_code = OverflowCode<F>(saturate);
  const auto vscale = hn::Set(df, scale);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  auto* o = static_cast<uint8_t*>(out);
  auto amax = hn::Zero(di);

  size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {  // two vectors per trip hide the latency chain
    const auto x0 = hn::LoadU(df, in + i);
    const auto x1 = hn::LoadU(df, in + i + N);
    amax = hn::Max(amax, hn::BitCast(di, hn::And(hn::BitCast(du, x0), abs_mask)));
    amax = hn::Max(amax, hn::BitCast(di, hn::And(hn::BitCast(du, x1), abs_mask)));
    EncodeStore<F>(df, hn::Mul(x0, vscale), overflow_code, o + i * kOutBytes);
    EncodeStore<F>(df, hn::Mul(x1, vscale), overflow_code, o + (i + N) * kOutBytes);
  }
  for (; i < n; i += N) {
    const size_t count = std::min(N, n - i);
    HWY_ALIGN float buf[HWY_MAX_BYTES / sizeof(float)] = {};
    HWY_ALIGN uint8_t codes[HWY_MAX_BYTES] = {};
    std::memcpy(buf, in + i, count * sizeof(float));
    const auto x = hn::Load(df, buf);
    amax = hn::Max(amax, hn::BitCast(di, hn::And(hn::BitCast(du, x), abs_mask)));
    EncodeStore<F>(df, hn::Mul(x, vscale), overflow_code, codes);
    std::memcpy(o + i * kOutBytes, codes, count * kOutBytes);
  }
  return static_cast<uint32_t>(hn::GetLane(hn::MaxOfLanes(di, amax)));
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#endif  // include guard
