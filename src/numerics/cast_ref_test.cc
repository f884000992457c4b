// The scalar reference casts against hand-computed values (docs/numerics.md) and against a third,
// brute-force oracle: the nearest representable value found by searching the codes.
#include "numerics/cast_ref.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace fp8lm {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(CastRef, E4M3KnownValues) {
  EXPECT_EQ(to_e4m3_ref(0.0f), 0x00);
  EXPECT_EQ(to_e4m3_ref(-0.0f), 0x80);
  EXPECT_EQ(to_e4m3_ref(1.0f), 0x38);
  EXPECT_EQ(to_e4m3_ref(-2.0f), 0xC0);
  EXPECT_EQ(to_e4m3_ref(448.0f), 0x7E);
  EXPECT_EQ(to_e4m3_ref(464.0f), 0x7E);  // tie between 448 and (virtual) 480 → even → 448
  EXPECT_EQ(to_e4m3_ref(std::nextafter(464.0f, 1e9f)), 0x7E);       // saturates
  EXPECT_EQ(to_e4m3_ref(std::nextafter(464.0f, 1e9f), false), 0x7F);  // → NaN
  EXPECT_EQ(to_e4m3_ref(464.0f, false), 0x7E);
  EXPECT_EQ(to_e4m3_ref(-1000.0f), 0xFE);
  EXPECT_EQ(to_e4m3_ref(-1000.0f, false), 0xFF);
  EXPECT_EQ(to_e4m3_ref(kInf), 0x7E);
  EXPECT_EQ(to_e4m3_ref(-kInf), 0xFE);
  EXPECT_EQ(to_e4m3_ref(kInf, false), 0x7F);
  EXPECT_EQ(to_e4m3_ref(-kInf, false), 0xFF);
  EXPECT_EQ(to_e4m3_ref(kNaN), 0x7F);
  EXPECT_EQ(to_e4m3_ref(-kNaN), 0xFF);
  EXPECT_EQ(to_e4m3_ref(std::ldexp(1.0f, -6)), 0x08);   // min normal
  EXPECT_EQ(to_e4m3_ref(std::ldexp(1.0f, -9)), 0x01);   // min subnormal
  EXPECT_EQ(to_e4m3_ref(std::ldexp(1.0f, -10)), 0x00);  // half of it: tie → even → 0
  EXPECT_EQ(to_e4m3_ref(-std::ldexp(1.0f, -10)), 0x80);
  EXPECT_EQ(to_e4m3_ref(std::ldexp(1.5f, -10)), 0x01);
  EXPECT_EQ(to_e4m3_ref(std::ldexp(3.0f, -10)), 0x02);  // 1.5 ulps: tie → even → 2
  EXPECT_EQ(to_e4m3_ref(std::ldexp(7.0f, -9)), 0x07);   // largest subnormal
  EXPECT_EQ(to_e4m3_ref(std::ldexp(15.5f, -10)), 0x08);  // rounds up into the normals
  EXPECT_EQ(to_e4m3_ref(17.0f), 0x58);                   // 1.0001b·2^4: tie → 16
  EXPECT_EQ(to_e4m3_ref(18.0f), 0x59);
  EXPECT_EQ(to_e4m3_ref(19.0f), 0x5A);                   // 1.0011b: tie → 1.010b = 20
  EXPECT_EQ(to_e4m3_ref(std::numeric_limits<float>::denorm_min()), 0x00);
  EXPECT_EQ(to_e4m3_ref(std::numeric_limits<float>::max()), 0x7E);
}

TEST(CastRef, E5M2KnownValues) {
  EXPECT_EQ(to_e5m2_ref(1.0f), 0x3C);
  EXPECT_EQ(to_e5m2_ref(57344.0f), 0x7B);
  EXPECT_EQ(to_e5m2_ref(std::nextafter(61440.0f, 0.0f)), 0x7B);
  EXPECT_EQ(to_e5m2_ref(61440.0f), 0x7B);         // overflows (tie goes to 2^16), saturated
  EXPECT_EQ(to_e5m2_ref(61440.0f, false), 0x7C);  // → inf
  EXPECT_EQ(to_e5m2_ref(-61440.0f, false), 0xFC);
  EXPECT_EQ(to_e5m2_ref(kInf, false), 0x7C);
  EXPECT_EQ(to_e5m2_ref(kInf), 0x7B);
  EXPECT_EQ(to_e5m2_ref(-kInf), 0xFB);
  EXPECT_EQ(to_e5m2_ref(kNaN), 0x7E);
  EXPECT_EQ(to_e5m2_ref(-kNaN, false), 0xFE);
  EXPECT_EQ(to_e5m2_ref(std::ldexp(1.0f, -16)), 0x01);
  EXPECT_EQ(to_e5m2_ref(std::ldexp(1.0f, -17)), 0x00);
  EXPECT_EQ(to_e5m2_ref(std::ldexp(3.0f, -17)), 0x02);
  EXPECT_EQ(to_e5m2_ref(std::ldexp(1.0f, -14)), 0x04);
}

TEST(CastRef, F16AndBF16KnownValues) {
  EXPECT_EQ(encode_ref(1.0f, kF16Format), 0x3C00u);
  EXPECT_EQ(encode_ref(65504.0f, kF16Format), 0x7BFFu);
  EXPECT_EQ(encode_ref(65520.0f, kF16Format), 0x7BFFu);
  EXPECT_EQ(encode_ref(65520.0f, kF16Format, false), 0x7C00u);
  EXPECT_EQ(encode_ref(std::ldexp(1.0f, -24), kF16Format), 0x0001u);
  EXPECT_EQ(encode_ref(std::ldexp(1.0f, -25), kF16Format), 0x0000u);
  EXPECT_EQ(encode_ref(1.0f, kBF16Format), 0x3F80u);
  EXPECT_EQ(encode_ref(1.0f + std::ldexp(1.0f, -8), kBF16Format), 0x3F80u);  // tie → even
  EXPECT_EQ(encode_ref(1.0f + std::ldexp(3.0f, -8), kBF16Format), 0x3F82u);
  EXPECT_EQ(encode_ref(std::numeric_limits<float>::max(), kBF16Format, false), 0x7F80u);
  EXPECT_EQ(encode_ref(std::numeric_limits<float>::max(), kBF16Format, true), 0x7F7Fu);
  EXPECT_EQ(encode_ref(std::numeric_limits<float>::denorm_min(), kBF16Format), 0x0000u);
  EXPECT_EQ(encode_ref(std::ldexp(1.0f, -133), kBF16Format), 0x0001u);  // bf16 subnormal
}

// Independent decoder: (-1)^s · 2^(e − bias) · (1 + m / 2^M), or the subnormal form.
double decode_by_formula(uint32_t code, const FloatFormat& f) {
  const uint32_t mag = code & f.magnitude_mask();
  const int e = static_cast<int>(mag >> f.man_bits);
  const int m = static_cast<int>(mag & ((1u << f.man_bits) - 1));
  const double v = e == 0 ? std::ldexp(m, f.min_normal_exp() - f.man_bits)
                          : std::ldexp(1.0 + std::ldexp(m, -f.man_bits), e - f.bias);
  return (code & f.sign_bit()) ? -v : v;
}

bool is_nan_code(uint32_t code, const FloatFormat& f) {
  const uint32_t mag = code & f.magnitude_mask();
  if (!f.has_inf) return mag == f.nan_code;
  return mag > f.inf_code;
}

void check_decode_all(const FloatFormat& f) {
  int nans = 0;
  for (uint32_t code = 0; code < (1u << f.bits); ++code) {
    const float v = decode_ref(code, f);
    if (is_nan_code(code, f)) {
      EXPECT_TRUE(std::isnan(v)) << code;
      EXPECT_EQ(std::signbit(v), (code & f.sign_bit()) != 0) << code;
      ++nans;
    } else if (f.has_inf && (code & f.magnitude_mask()) == f.inf_code) {
      EXPECT_TRUE(std::isinf(v)) << code;
    } else {
      EXPECT_EQ(static_cast<double>(v), decode_by_formula(code, f)) << code;
      EXPECT_EQ(std::signbit(v), (code & f.sign_bit()) != 0) << code;
    }
  }
  if (!f.has_inf) {
    EXPECT_EQ(nans, 2);  // E4M3: exactly 0x7F and 0xFF
  }
}

TEST(CastRef, DecodeEveryCode) {
  check_decode_all(kE4M3Format);
  check_decode_all(kE5M2Format);
  check_decode_all(kF16Format);
  check_decode_all(kBF16Format);
  EXPECT_EQ(from_e4m3_ref(0x7E), 448.0f);
  EXPECT_EQ(from_e5m2_ref(0x7B), 57344.0f);
  EXPECT_TRUE(std::isnan(from_e4m3_ref(0xFF)));
}

// Brute-force oracle: the finite non-negative codes 0..max_code increase with their value;
// binary-search the two neighbours of |x| and pick the nearer, ties to the even code.
uint32_t encode_by_search(float x, const FloatFormat& f, bool saturate) {
  const uint32_t sign = std::signbit(x) ? f.sign_bit() : 0u;
  const uint32_t overflow = saturate ? f.max_code : (f.has_inf ? f.inf_code : f.nan_code);
  if (std::isnan(x)) return sign | f.nan_code;
  const double a = std::fabs(static_cast<double>(x));
  const double max = decode_by_formula(f.max_code, f);
  // The value one ulp above max, as if the exponent range continued.
  const double next = max + (max - decode_by_formula(f.max_code - 1, f));
  if (a > max) {
    const double mid = (max + next) / 2;
    if (a > mid || (a == mid && (f.max_code & 1))) return sign | overflow;
    return sign | f.max_code;
  }
  uint32_t lo = 0, hi = f.max_code;  // value(lo) <= a <= value(hi)
  while (hi - lo > 1) {
    const uint32_t m = (lo + hi) / 2;
    (decode_by_formula(m, f) <= a ? lo : hi) = m;
  }
  const double dlo = a - decode_by_formula(lo, f), dhi = decode_by_formula(hi, f) - a;
  uint32_t code = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
  if (decode_by_formula(hi, f) == a) code = hi;
  return sign | code;
}

void check_against_search(const FloatFormat& f) {
  std::vector<float> xs;
  // Every midpoint between neighbouring codes, and the floats just around it.
  for (uint32_t c = 0; c + 1 <= f.max_code; ++c) {
    const float mid = static_cast<float>((decode_by_formula(c, f) + decode_by_formula(c + 1, f)) / 2);
    for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, kInf),
                    static_cast<float>(decode_by_formula(c, f))})
      xs.push_back(v);
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) xs.push_back(std::bit_cast<float>(bits(rng)));
  for (float& v : std::vector<float>(xs)) xs.push_back(-v);
  for (bool sat : {true, false}) {
    int bad = 0;
    for (float v : xs) {
      const uint32_t want = encode_by_search(v, f, sat), got = encode_ref(v, f, sat);
      if (want != got && ++bad <= 5)
        ADD_FAILURE() << "x=" << v << " (bits " << std::hex << std::bit_cast<uint32_t>(v)
                      << ") sat=" << sat << " want " << want << " got " << got;
    }
    EXPECT_EQ(bad, 0);
  }
}

TEST(CastRef, E4M3MatchesNearestCodeSearch) { check_against_search(kE4M3Format); }
TEST(CastRef, E5M2MatchesNearestCodeSearch) { check_against_search(kE5M2Format); }
TEST(CastRef, F16MatchesNearestCodeSearch) { check_against_search(kF16Format); }
TEST(CastRef, BF16MatchesNearestCodeSearch) { check_against_search(kBF16Format); }

TEST(CastRef, RoundTripEveryNonNaNCode) {
  for (const FloatFormat* f : {&kE4M3Format, &kE5M2Format, &kF16Format, &kBF16Format}) {
    for (uint32_t code = 0; code < (1u << f->bits); ++code) {
      if (is_nan_code(code, *f)) continue;
      EXPECT_EQ(encode_ref(decode_ref(code, *f), *f, false), code) << code;
    }
  }
}

}  // namespace
}  // namespace fp8lm
