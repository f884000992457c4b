// Small Highway helpers shared by the kernel families: partial loads/stores for row tails,
// sums whose bits do not depend on the vector width, and exponent bounds.

#if defined(FP8LM_KERNELS_VEC_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FP8LM_KERNELS_VEC_INL_H_
#undef FP8LM_KERNELS_VEC_INL_H_
#else
#define FP8LM_KERNELS_VEC_INL_H_
#endif

#include <cstdint>
#include <cstring>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Loads min(n, lanes) floats from p; missing lanes read as zero.
template <class DF>
HWY_INLINE hn::Vec<DF> LoadPart(DF df, const float* p, size_t n) {
  if (n >= hn::Lanes(df)) return hn::LoadU(df, p);
  HWY_ALIGN float buf[hn::MaxLanes(DF())] = {};
  std::memcpy(buf, p, n * sizeof(float));
  return hn::Load(df, buf);
}

// Stores the first min(n, lanes) lanes of v to p.
template <class DF>
HWY_INLINE void StorePart(DF df, hn::Vec<DF> v, float* p, size_t n) {
  if (n >= hn::Lanes(df)) return hn::StoreU(v, df, p);
  HWY_ALIGN float buf[hn::MaxLanes(DF())];
  hn::Store(v, df, buf);
  std::memcpy(p, buf, n * sizeof(float));
}

// Running sums in a fixed pattern of 32, whatever the vector width: the element at offset e
// of a run adds into sum e mod 32, and total() adds the 32 in one fixed order. AVX-512 keeps
// them in two vectors, AVX2 in four, with the same additions in the same order, so a row's
// sum has the same bits on both (the scalar target rounds its multiply-adds twice, so only
// sums without products match there).
template <class DF>
class Sums32 {
 public:
  using V = hn::Vec<DF>;
  static constexpr size_t kLanes = hn::MaxLanes(DF());
  static constexpr size_t kSlots = 32 / kLanes;
  static_assert(kSlots * kLanes == 32, "vectors of 1 to 32 floats");

  explicit Sums32(DF df) : df_(df) {
    for (V& v : v_) v = hn::Zero(df);
  }
  // The sum of the vector at offset c of the run (a multiple of the lanes).
  V& at(size_t c) { return v_[(c / kLanes) % kSlots]; }
  float total() const {
    HWY_ALIGN float a[32];
    for (size_t k = 0; k < kSlots; ++k) hn::Store(v_[k], df_, a + k * kLanes);
    for (size_t w = 16; w >= 1; w /= 2)
      for (size_t i = 0; i < w; ++i) a[i] += a[i + w];
    return a[0];
  }

 private:
  DF df_;
  V v_[kSlots];
};

// Running bounds of the biased float32 exponents of nonzero lanes, packed as
// numerics/exponent_range.h's kernels word (least << 16 | greatest).
template <class DF>
class ExponentBounds {
 public:
  using DU = hn::RebindToUnsigned<DF>;
  explicit ExponentBounds(DF) : lo_(hn::Set(DU(), 0x1FFu)), hi_(hn::Zero(DU())) {}
  void add(hn::Vec<DF> v) {
    const DU du;
    const auto mag = hn::And(hn::BitCast(du, v), hn::Set(du, 0x7FFFFFFFu));
    const auto e = hn::ShiftRight<23>(mag);
    lo_ = hn::Min(lo_, hn::IfThenElse(hn::Eq(mag, hn::Zero(du)), hn::Set(du, 0x1FFu), e));
    hi_ = hn::Max(hi_, e);
  }
  uint32_t packed() const {
    const DU du;
    return (hn::GetLane(hn::MinOfLanes(du, lo_)) << 16) | hn::GetLane(hn::MaxOfLanes(du, hi_));
  }

 private:
  hn::Vec<DU> lo_, hi_;
};

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#endif  // include guard
