// Narrow-format sums, FP8 rescale and saturation count (kernels/reduce_ops.h).
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
    EncodeStore<F>(df, fn(va, vb), overflow_code, xo);
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

template <FloatFormat F>
void Fp8Add(uint8_t* inout, const uint8_t* in, size_t n) {
  MapCodes<F>(inout, in, inout, n, F.max_code, [](auto x, auto y) { return hn::Add(x, y); });
}
void E4M3AddChunk(uint8_t* inout, const uint8_t* in, size_t n) {
  Fp8Add<kE4M3Format>(inout, in, n);
}
void E5M2AddChunk(uint8_t* inout, const uint8_t* in, size_t n) {
  Fp8Add<kE5M2Format>(inout, in, n);
}

void BF16AddChunk(uint16_t* inout, const uint16_t* in, size_t n) {
  MapCodes<kBF16Format>(inout, in, inout, n, kBF16Format.inf_code,
                        [](auto x, auto y) { return hn::Add(x, y); });
}

template <FloatFormat F>
void Fp8Rescale(uint8_t* dst, const uint8_t* src, size_t n, float factor) {
  const hn::ScalableTag<float> df;
  const auto f = hn::Set(df, factor);
  MapCodes<F>(dst, src, src, n, F.max_code, [&](auto x, auto) { return hn::Mul(x, f); });
}
void E4M3RescaleChunk(uint8_t* dst, const uint8_t* src, size_t n, float factor) {
  Fp8Rescale<kE4M3Format>(dst, src, n, factor);
}
void E5M2RescaleChunk(uint8_t* dst, const uint8_t* src, size_t n, float factor) {
  Fp8Rescale<kE5M2Format>(dst, src, n, factor);
}

// Codes whose magnitude bits equal max_code (the format's largest finite value).
uint64_t CountMaxCodesChunk(const uint8_t* HWY_RESTRICT codes, size_t n, uint32_t mask,
                            uint32_t max_code) {
  const hn::ScalableTag<uint8_t> d8;
  const size_t N = hn::Lanes(d8);
  const auto vmask = hn::Set(d8, static_cast<uint8_t>(mask));
  const auto vmax = hn::Set(d8, static_cast<uint8_t>(max_code));
  uint64_t count = 0;
  size_t i = 0;
  for (; i + N <= n; i += N)
    count += hn::CountTrue(d8, hn::Eq(hn::And(hn::LoadU(d8, codes + i), vmask), vmax));
  for (; i < n; ++i) count += (codes[i] & mask) == max_code;
  return count;
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/check.h"
#include "core/parallel.h"
#include "kernels/reduce_ops.h"
#include "numerics/float_format.h"

namespace fp8lm {
HWY_EXPORT(E4M3AddChunk);
HWY_EXPORT(E5M2AddChunk);
HWY_EXPORT(BF16AddChunk);
HWY_EXPORT(E4M3RescaleChunk);
HWY_EXPORT(E5M2RescaleChunk);
HWY_EXPORT(CountMaxCodesChunk);

namespace kernels {
namespace {
constexpr size_t kMinChunk = 1 << 16;  // below this, threading costs more than it saves

const FloatFormat& fp8_format(DType format) {
  FP8LM_CHECK(format == DType::kE4M3 || format == DType::kE5M2,
              "not an FP8 format: ", dtype_name(format));
  return float_format(format);
}
}  // namespace

void fp8_add(DType format, uint8_t* inout, const uint8_t* in, size_t n) {
  fp8_format(format);
  const bool e4 = format == DType::kE4M3;
  parallel_for(n, kMinChunk, 64, [&](size_t, size_t begin, size_t end) {
    if (e4)
      HWY_DYNAMIC_DISPATCH(E4M3AddChunk)(inout + begin, in + begin, end - begin);
    else
      HWY_DYNAMIC_DISPATCH(E5M2AddChunk)(inout + begin, in + begin, end - begin);
  });
}

void bf16_add(uint16_t* inout, const uint16_t* in, size_t n) {
  parallel_for(n, kMinChunk, 64, [&](size_t, size_t begin, size_t end) {
    HWY_DYNAMIC_DISPATCH(BF16AddChunk)(inout + begin, in + begin, end - begin);
  });
}

void fp8_rescale(DType format, uint8_t* dst, const uint8_t* src, size_t n, float factor) {
  fp8_format(format);
  const bool e4 = format == DType::kE4M3;
  parallel_for(n, kMinChunk, 64, [&](size_t, size_t begin, size_t end) {
    if (e4)
      HWY_DYNAMIC_DISPATCH(E4M3RescaleChunk)(dst + begin, src + begin, end - begin, factor);
    else
      HWY_DYNAMIC_DISPATCH(E5M2RescaleChunk)(dst + begin, src + begin, end - begin, factor);
  });
}

size_t fp8_count_saturated(DType format, const uint8_t* codes, size_t n) {
  const FloatFormat& f = fp8_format(format);
  std::vector<uint64_t> partial(chunk_count(n, kMinChunk), 0);
  parallel_for(n, kMinChunk, 64, [&](size_t c, size_t begin, size_t end) {
    partial[c] = HWY_DYNAMIC_DISPATCH(CountMaxCodesChunk)(codes + begin, end - begin,
                                                          f.magnitude_mask(), f.max_code);
  });
  uint64_t total = 0;
  for (uint64_t p : partial) total += p;
  return static_cast<size_t>(total);
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
