// Narrow-format sums, E4M3 rescale and saturation count (kernels/reduce_ops.h).
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/reduce_ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/codec-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {

// Applies fn(decoded a, decoded b) → float32 lanes to n codes of format F and stores the
// result encoded into out (which may be a or b); the tail goes through padded buffers.
template <FloatFormat F, class Fn>
HWY_INLINE void MapCodes(void* out, const void* a, const void* b, size_t n,
                         uint32_t overflow_code, Fn fn) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  constexpr size_t kBytes = F.bits / 8;
  const size_t N = hn::Lanes(df);
  const auto* pa = static_cast<const uint8_t*>(a);
  const auto* pb = static_cast<const uint8_t*>(b);
  auto* po = static_cast<uint8_t*>(out);
  auto step = [&](const uint8_t* xa, const uint8_t* xb, uint8_t* xo) {
    const auto va = DecodeLanes<F>(df, LoadCodes<F>(du, xa));
    const auto vb = DecodeLanes<F>(df, LoadCodes<F>(du, xb));
    StoreCodes<F>(du, EncodeLanes<F>(df, fn(va, vb), overflow_code), xo);
  };
  size_t i = 0;
  for (; i + N <= n; i += N) step(pa + i * kBytes, pb + i * kBytes, po + i * kBytes);
  if (i < n) {
    const size_t bytes = (n - i) * kBytes;
    HWY_ALIGN uint8_t ba[HWY_MAX_BYTES] = {}, bb[HWY_MAX_BYTES] = {}, bo[HWY_MAX_BYTES];
    std::memcpy(ba, pa + i * kBytes, bytes);
    std::memcpy(bb, pb + i * kBytes, bytes);
    step(ba, bb, bo);
    std::memcpy(po + i * kBytes, bo, bytes);
  }
}

void E4M3AddChunk(uint8_t* inout, const uint8_t* in, size_t n) {
  MapCodes<kE4M3Format>(inout, in, inout, n, kE4M3Format.max_code,
                        [](auto x, auto y) { return hn::Add(x, y); });
}

void BF16AddChunk(uint16_t* inout, const uint16_t* in, size_t n) {
  MapCodes<kBF16Format>(inout, in, inout, n, kBF16Format.inf_code,
                        [](auto x, auto y) { return hn::Add(x, y); });
}

void E4M3RescaleChunk(uint8_t* dst, const uint8_t* src, size_t n, float factor) {
  const hn::ScalableTag<float> df;
  const auto f = hn::Set(df, factor);
  MapCodes<kE4M3Format>(dst, src, src, n, kE4M3Format.max_code,
                        [&](auto x, auto) { return hn::Mul(x, f); });
}

uint64_t E4M3CountSaturatedChunk(const uint8_t* HWY_RESTRICT codes, size_t n) {
  const hn::ScalableTag<uint8_t> d8;
  const size_t N = hn::Lanes(d8);
  const auto magnitude = hn::Set(d8, static_cast<uint8_t>(kE4M3Format.magnitude_mask()));
  const auto max_code = hn::Set(d8, static_cast<uint8_t>(kE4M3Format.max_code));
  uint64_t count = 0;
  size_t i = 0;
  for (; i + N <= n; i += N)
    count += hn::CountTrue(d8, hn::Eq(hn::And(hn::LoadU(d8, codes + i), magnitude), max_code));
  for (; i < n; ++i) count += (codes[i] & kE4M3Format.magnitude_mask()) == kE4M3Format.max_code;
  return count;
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/parallel.h"
#include "kernels/reduce_ops.h"

namespace fp8lm {
HWY_EXPORT(E4M3AddChunk);
HWY_EXPORT(BF16AddChunk);
HWY_EXPORT(E4M3RescaleChunk);
HWY_EXPORT(E4M3CountSaturatedChunk);

namespace kernels {
namespace {
constexpr size_t kMinChunk = 1 << 16;  // below this, threading costs more than it saves
}  // namespace

void e4m3_add(uint8_t* inout, const uint8_t* in, size_t n) {
  parallel_for(n, kMinChunk, 64, [&](size_t, size_t begin, size_t end) {
    HWY_DYNAMIC_DISPATCH(E4M3AddChunk)(inout + begin, in + begin, end - begin);
  });
}

void bf16_add(uint16_t* inout, const uint16_t* in, size_t n) {
  parallel_for(n, kMinChunk, 64, [&](size_t, size_t begin, size_t end) {
    HWY_DYNAMIC_DISPATCH(BF16AddChunk)(inout + begin, in + begin, end - begin);
  });
}

void e4m3_rescale(uint8_t* dst, const uint8_t* src, size_t n, float factor) {
  parallel_for(n, kMinChunk, 64, [&](size_t, size_t begin, size_t end) {
    HWY_DYNAMIC_DISPATCH(E4M3RescaleChunk)(dst + begin, src + begin, end - begin, factor);
  });
}

size_t e4m3_count_saturated(const uint8_t* codes, size_t n) {
  std::vector<uint64_t> partial(chunk_count(n, kMinChunk), 0);
  parallel_for(n, kMinChunk, 64, [&](size_t c, size_t begin, size_t end) {
    partial[c] = HWY_DYNAMIC_DISPATCH(E4M3CountSaturatedChunk)(codes + begin, end - begin);
  });
  uint64_t total = 0;
  for (uint64_t p : partial) total += p;
  return static_cast<size_t>(total);
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
