// SIMD float32 <-> narrow-format codecs (E4M3, E5M2, F16, BF16), one Highway body compiled
// per target. Bit-identical to numerics/cast_ref.cc, which works differently (exact integer
// rounding); the exhaustive tests hold the two together over all 2^32 inputs.
//
// Encoding, per lane of binary32 bits (sign stripped):
//  - normal results: add (half-ulp − 1 + lsb) at the target's rounding position and shift;
//    this is round-to-nearest-even, and a carry moves into the exponent as it should;
//  - subnormal results: add a magic power of two whose binary32 ulp equals the target's
//    subnormal ulp; the FPU's own round-to-nearest-even does the rounding exactly once;
//  - then overflow (saturate or inf/NaN), NaN and the sign.

#if defined(FP8LM_KERNELS_CODEC_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FP8LM_KERNELS_CODEC_INL_H_
#undef FP8LM_KERNELS_CODEC_INL_H_
#else
#define FP8LM_KERNELS_CODEC_INL_H_
#endif

#include <bit>
#include <cstdint>
#include <type_traits>

#include "hwy/highway.h"
#include "numerics/float_format.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// binary32 whose ulp is the format's subnormal ulp 2^(emin − man_bits).
template <FloatFormat F>
constexpr uint32_t kMagicBits =
    static_cast<uint32_t>(F.min_normal_exp() - F.man_bits + 23 + 127) << 23;

// What overflow becomes, without the sign.
template <FloatFormat F>
constexpr uint32_t OverflowCode(bool saturate) {
  return saturate ? F.max_code : (F.has_inf ? F.inf_code : F.nan_code);
}

// F16 goes through the CPU's conversions where the target guarantees them (x86: F16C is part
// of AVX2 and AVX-512): round-to-nearest-even with exact subnormals, as the bit arithmetic
// below, in a few instructions. NaN and saturation are fixed up to the same codes.
constexpr bool kHwF16 = HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2;
template <FloatFormat F>
constexpr bool kIsF16 = F.bits == 16 && F.bias == 15;

// Stores x as F16 codes at p through the conversion instruction. NaN lanes become the quiet
// NaN with their sign first, which converts to the canonical code 0x7E00 | sign; with
// saturation, |x| ≥ 65520 (which rounds to inf) is clamped to the largest finite first.
template <class DF>
HWY_INLINE void StoreF16Hw(DF df, hn::Vec<DF> x, bool saturate, void* HWY_RESTRICT p) {
  static_assert(kF16Format.max_code == 0x7BFF && kF16Format.nan_code == 0x7E00);
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<hwy::float16_t, DF> dh;
  auto y = x;
  if (saturate) {
    const auto lim = hn::Set(df, 65504.0f);
    y = hn::Min(hn::Max(y, hn::Neg(lim)), lim);
  }
  const auto qnan =
      hn::Or(hn::And(hn::BitCast(du, x), hn::Set(du, 0x80000000u)), hn::Set(du, 0x7FC00000u));
  y = hn::IfThenElse(hn::IsNaN(x), hn::BitCast(df, qnan), y);
  hn::StoreU(hn::DemoteTo(dh, y), dh, static_cast<hwy::float16_t*>(p));
}

// float32 lanes → format codes (sign included) in the u32 lanes of the same width.
template <FloatFormat F, class DF>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<DF>> EncodeLanes(DF df, hn::Vec<DF> x,
                                                        uint32_t overflow_code) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  constexpr int kDrop = 23 - F.man_bits;

  const auto bits = hn::BitCast(du, x);
  const auto abs = hn::And(bits, hn::Set(du, 0x7FFFFFFFu));

  const auto lsb = hn::And(hn::ShiftRight<kDrop>(abs), hn::Set(du, 1u));
  const auto biased = hn::Add(abs, hn::Add(hn::Set(du, (1u << (kDrop - 1)) - 1u), lsb));
  const auto normal = hn::Sub(hn::ShiftRight<kDrop>(biased),
                              hn::Set(du, static_cast<uint32_t>(127 - F.bias) << F.man_bits));

  const auto magic = hn::Set(df, std::bit_cast<float>(kMagicBits<F>));
  const auto sum = hn::Add(hn::BitCast(df, abs), magic);
  const auto subnormal = hn::Sub(hn::BitCast(du, sum), hn::Set(du, kMagicBits<F>));

  // All comparisons on non-negative int32 views (abs < 2^31; codes are small).
  const auto abs_i = hn::BitCast(di, abs);
  const int32_t min_normal_bits = (F.min_normal_exp() + 127) << 23;
  auto code = hn::IfThenElse(hn::RebindMask(du, hn::Lt(abs_i, hn::Set(di, min_normal_bits))),
                             subnormal, normal);
  const auto over = hn::Gt(hn::BitCast(di, code), hn::Set(di, static_cast<int32_t>(F.max_code)));
  code = hn::IfThenElse(hn::RebindMask(du, over), hn::Set(du, overflow_code), code);
  const auto nan = hn::Gt(abs_i, hn::Set(di, 0x7F800000));
  code = hn::IfThenElse(hn::RebindMask(du, nan), hn::Set(du, F.nan_code), code);

  const auto sign = hn::ShiftRight<32 - F.bits>(hn::And(bits, hn::Set(du, 0x80000000u)));
  return hn::Or(code, sign);
}

// Format codes in u32 lanes → float32 lanes, exact.
template <FloatFormat F, class DF>
HWY_INLINE hn::Vec<DF> DecodeLanes(DF df, hn::Vec<hn::RebindToUnsigned<DF>> code) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto sign = hn::ShiftLeft<32 - F.bits>(hn::And(code, hn::Set(du, F.sign_bit())));
  const auto mag = hn::And(code, hn::Set(du, F.magnitude_mask()));
  const auto placed = hn::ShiftLeft<23 - F.man_bits>(mag);
  if constexpr (F.bias == 127) {
    // bf16: already the top half of the binary32 encoding (NaN payloads kept).
    return hn::BitCast(df, hn::Or(placed, sign));
  } else {
    // Exponent field lands in binary32's; rescale by 2^(127 − bias). Subnormal codes become
    // binary32 subnormals first, and the power-of-two product is exact.
    const auto scale = hn::Set(df, std::bit_cast<float>(static_cast<uint32_t>(254 - F.bias) << 23));
    auto value = hn::BitCast(du, hn::Mul(hn::BitCast(df, placed), scale));
    const auto mag_i = hn::BitCast(di, mag);
    const auto qnan = hn::Set(du, 0x7FC00000u);
    if constexpr (F.has_inf) {
      const int32_t first_special = static_cast<int32_t>(F.inf_code);
      const auto special = hn::RebindMask(du, hn::Gt(mag_i, hn::Set(di, first_special - 1)));
      const auto is_inf = hn::RebindMask(du, hn::Eq(mag_i, hn::Set(di, first_special)));
      const auto inf_or_nan = hn::IfThenElse(is_inf, hn::Set(du, 0x7F800000u), qnan);
      value = hn::IfThenElse(special, inf_or_nan, value);
    } else {
      const auto nan = hn::RebindMask(du, hn::Eq(mag_i, hn::Set(di, int32_t(F.nan_code))));
      value = hn::IfThenElse(nan, qnan, value);
    }
    return hn::BitCast(df, hn::Or(value, sign));
  }
}

// Loads / stores of format codes of width F.bits, widened to / narrowed from u32 lanes.
template <FloatFormat F, class DU>
HWY_INLINE hn::Vec<DU> LoadCodes(DU du, const void* HWY_RESTRICT p) {
  using Storage = std::conditional_t<F.bits == 8, uint8_t, uint16_t>;
  const hn::Rebind<Storage, DU> dn;
  return hn::PromoteTo(du, hn::LoadU(dn, static_cast<const Storage*>(p)));
}

template <FloatFormat F, class DU>
HWY_INLINE void StoreCodes(DU /*du*/, hn::Vec<DU> codes, void* HWY_RESTRICT p) {
  using Storage = std::conditional_t<F.bits == 8, uint8_t, uint16_t>;
  const hn::RebindToSigned<DU> di;
  const hn::Rebind<Storage, DU> dn;
  // Codes are < 2^16, so the saturating demotion from int32 is exact.
  hn::StoreU(hn::DemoteTo(dn, hn::BitCast(di, codes)), dn, static_cast<Storage*>(p));
}

// Encodes float32 lanes and stores their codes (F.bits wide) at p: F16 through StoreF16Hw
// where the target has the conversion (its overflow codes are the largest finite or inf),
// every other format through EncodeLanes.
template <FloatFormat F, class DF>
HWY_INLINE void EncodeStore(DF df, hn::Vec<DF> x, uint32_t overflow_code, void* HWY_RESTRICT p) {
  if constexpr (kHwF16 && kIsF16<F>) {
    if (overflow_code == F.max_code || overflow_code == F.inf_code)
      return StoreF16Hw(df, x, overflow_code == F.max_code, p);
  }
  StoreCodes<F>(hn::RebindToUnsigned<DF>(), EncodeLanes<F>(df, x, overflow_code), p);
}

// Loads one vector of source elements (dtype kSrc: f32 or a narrow format) as float32 lanes.
template <int kSrc, class DF>
HWY_INLINE hn::Vec<DF> LoadAsF32(DF df, const uint8_t* HWY_RESTRICT p) {
  const hn::RebindToUnsigned<DF> du;
  if constexpr (kSrc == static_cast<int>(DType::kF32)) {
    return hn::LoadU(df, reinterpret_cast<const float*>(p));
  } else if constexpr (kHwF16 && kSrc == static_cast<int>(DType::kF16)) {
    const hn::Rebind<hwy::float16_t, DF> dh;
    const auto v = hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
    // NaN as DecodeLanes gives it: the quiet NaN, sign kept, payload dropped.
    const auto qnan = hn::Or(hn::And(hn::BitCast(du, v), hn::Set(du, 0x80000000u)),
                             hn::Set(du, 0x7FC00000u));
    return hn::IfThenElse(hn::IsNaN(v), hn::BitCast(df, qnan), v);
  } else {
    constexpr FloatFormat F = float_format(static_cast<DType>(kSrc));
    return DecodeLanes<F>(df, LoadCodes<F>(du, p));
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#endif  // include guard
