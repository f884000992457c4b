// Small Highway helpers shared by the kernel families: partial loads/stores for row tails.

#if defined(FP8LM_KERNELS_VEC_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FP8LM_KERNELS_VEC_INL_H_
#undef FP8LM_KERNELS_VEC_INL_H_
#else
#define FP8LM_KERNELS_VEC_INL_H_
#endif

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

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#endif  // include guard
