#include "numerics/cast_ref.h"

#include <bit>

namespace fp8lm {

uint32_t encode_ref(float x, const FloatFormat& f, bool saturate) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t sign = (bits >> 31) ? f.sign_bit() : 0u;
  const uint32_t exp_field = (bits >> 23) & 0xFF;
  const uint32_t frac = bits & 0x7FFFFF;
  const uint32_t overflow_code = saturate ? f.max_code : (f.has_inf ? f.inf_code : f.nan_code);

  if (exp_field == 0xFF) {
    if (frac != 0) return sign | f.nan_code;
    return sign | overflow_code;  // ±inf
  }
  // The input is exactly m · 2^e with an integer m < 2^24.
  int64_t m = exp_field == 0 ? frac : (frac | (1u << 23));
  const int e = exp_field == 0 ? -149 : static_cast<int>(exp_field) - 150;
  if (m == 0) return sign;

  // Unbiased exponent of the leading bit, then the exponent of one ulp in the target
  // (subnormals share the ulp of the smallest normal binade).
  const int lead = e + (63 - std::countl_zero(static_cast<uint64_t>(m)));
  const int ulp_exp = (lead > f.min_normal_exp() ? lead : f.min_normal_exp()) - f.man_bits;

  // n = m · 2^(e − ulp_exp), rounded to nearest, ties to even, in integers.
  int64_t n;
  const int shift = ulp_exp - e;
  if (shift <= 0) {
    n = m << -shift;  // exact: the target ulp is at most the input ulp
  } else if (shift > 40) {
    n = 0;  // m < 2^24, so m · 2^-shift < 2^-16: below half an ulp
  } else {
    const int64_t half = int64_t{1} << (shift - 1);
    const int64_t rem = m & ((int64_t{1} << shift) - 1);
    n = m >> shift;
    if (rem > half || (rem == half && (n & 1))) ++n;
  }
  int q_exp = ulp_exp;
  if (n == (int64_t{1} << (f.man_bits + 1))) {  // rounding carried into the next binade
    n >>= 1;
    ++q_exp;
  }
  if (n == 0) return sign;  // underflow to signed zero

  // Encode: subnormal when n < 2^man_bits (then q_exp is the subnormal ulp exponent).
  int64_t code;
  if (n < (int64_t{1} << f.man_bits)) {
    code = n;
  } else {
    const int64_t biased = q_exp + f.man_bits + f.bias;
    code = (biased << f.man_bits) | (n - (int64_t{1} << f.man_bits));
  }
  // Codes of finite values grow with the value, so this is the exact overflow test.
  if (code > static_cast<int64_t>(f.max_code)) return sign | overflow_code;
  return sign | static_cast<uint32_t>(code);
}

float decode_ref(uint32_t code, const FloatFormat& f) {
  const uint32_t sign = (code & f.sign_bit()) ? 0x80000000u : 0u;
  const uint32_t mag = code & f.magnitude_mask();
  const uint32_t exp_field = mag >> f.man_bits;
  const uint32_t man = mag & ((1u << f.man_bits) - 1);
  const uint32_t exp_all_ones = (1u << f.exp_bits) - 1;

  if (f.has_inf && exp_field == exp_all_ones) {
    if (man == 0) return std::bit_cast<float>(sign | 0x7F800000u);
    if (f.bits == 16 && f.bias == 127) return std::bit_cast<float>(sign | (mag << 16));  // bf16
    return std::bit_cast<float>(sign | 0x7FC00000u);
  }
  if (!f.has_inf && mag == f.nan_code) return std::bit_cast<float>(sign | 0x7FC00000u);
  if (mag == 0) return std::bit_cast<float>(sign);

  // Value = n · 2^p with integer n; normalise n to 24 bits to build the binary32 encoding.
  uint32_t n = exp_field == 0 ? man : (man | (1u << f.man_bits));
  int p = (exp_field == 0 ? 1 : static_cast<int>(exp_field)) - f.bias - f.man_bits;
  const int lead = 31 - std::countl_zero(n);  // n = 1.xxx · 2^lead
  const int unbiased = p + lead;
  // Every narrow format's values are binary32 normals or, for bf16, binary32 subnormals.
  if (unbiased >= -126) {
    const uint32_t frac = (n << (23 - lead)) & 0x7FFFFF;
    return std::bit_cast<float>(sign | (static_cast<uint32_t>(unbiased + 127) << 23) | frac);
  }
  // binary32 subnormal: value = frac · 2^-149.
  const uint32_t frac = n << (p + 149);
  return std::bit_cast<float>(sign | frac);
}

}  // namespace fp8lm
