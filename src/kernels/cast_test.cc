// The SIMD cast kernels against the scalar reference, on every compiled target: random and
// special inputs, every length class (tails, threaded sizes), scales, poisoned outputs.
#include "kernels/cast.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/check.h"
#include "kernels/simd.h"
#include "kernels/simd_test_util.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

constexpr uint8_t kPoison = 0xA5;
const DType kNarrow[] = {DType::kE4M3, DType::kE5M2, DType::kF16, DType::kBF16};

// Inputs that hit every branch: random bit patterns (all exponents, NaNs, infs,
// subnormals), values near each format's range, and exact specials.
std::vector<float> test_inputs(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exp(-30, 20);
  std::vector<float> x(n);
  const float specials[] = {0.0f, -0.0f, 448.0f, 464.0f, 480.0f, 57344.0f, 61440.0f, 65504.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max()};
  for (size_t i = 0; i < n; ++i) {
    switch (i % 4) {
      case 0:
        x[i] = std::bit_cast<float>(bits(rng));
        break;
      case 1:
      case 2:
        x[i] = std::ldexp(unit(rng), exp(rng));
        break;
      default:
        x[i] = specials[(i / 4) % std::size(specials)];
    }
  }
  return x;
}

uint32_t load_code(const std::vector<uint8_t>& buf, size_t i, size_t esize) {
  uint32_t v = 0;
  std::memcpy(&v, buf.data() + i * esize, esize);
  return v;
}

class CastOnTarget : public OnEveryTarget {};

TEST_P(CastOnTarget, QuantizeMatchesReference) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{16}, size_t{31}, size_t{33},
                   size_t{1000}, size_t{3 * 65536 + 5}}) {
    const std::vector<float> x = test_inputs(n, static_cast<uint32_t>(n) + 1);
    for (DType t : kNarrow) {
      const FloatFormat& f = float_format(t);
      const size_t es = dtype_size(t);
      for (bool sat : {true, false}) {
        for (float scale : {1.0f, 0.0078125f, 3.0f}) {
          std::vector<uint8_t> out((n + 8) * es, kPoison);
          const float a = kernels::quantize(out.data(), t, x.data(), n, scale, sat);
          int bad = 0;
          for (size_t i = 0; i < n && bad < 3; ++i) {
            const uint32_t want = encode_ref(x[i] * scale, f, sat);
            const uint32_t got = load_code(out, i, es);
            if (want != got) {
              ++bad;
              ADD_FAILURE() << dtype_name(t) << " sat=" << sat << " n=" << n << " i=" << i
                            << " x=" << x[i] << " want " << want << " got " << got;
            }
          }
          for (size_t i = n * es; i < out.size(); ++i) ASSERT_EQ(out[i], kPoison) << "overrun";
          // amax of the unscaled input, NaN-propagating.
          float want_amax = 0.0f;
          bool any_nan = false;
          for (float v : x) {
            any_nan |= std::isnan(v);
            if (!std::isnan(v)) want_amax = std::max(want_amax, std::fabs(v));
          }
          if (any_nan) {
            EXPECT_TRUE(std::isnan(a));
          } else {
            EXPECT_EQ(a, want_amax);
          }
        }
      }
    }
  }
}

TEST_P(CastOnTarget, AmaxOfFiniteInput) {
  std::vector<float> x(100003);
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 2.0f);
  for (float& v : x) v = d(rng);
  x[77777] = -123.5f;
  EXPECT_EQ(kernels::amax(x.data(), x.size()), 123.5f);
  EXPECT_EQ(kernels::amax(x.data(), 0), 0.0f);
  x[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(kernels::amax(x.data(), x.size())));
}

// floor(log2 |v|) as exponent_range counts it (float32 subnormal -127, inf/NaN 128).
int exponent_of(double v) {
  if (!std::isfinite(v)) return 128;
  if (std::fabs(v) < 0x1p-126) return -127;
  return std::ilogb(v);
}

// Every stored type, every length class, strided rows whose gaps hold values that must not
// count, against the reference decode of each value.
TEST_P(CastOnTarget, ExponentRangeMatchesReference) {
  std::mt19937 rng(29);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    const size_t es = dtype_size(t);
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{33}, size_t{1000},
                     size_t{3 * 65536 + 5}}) {
      for (int kind = 0; kind < 3; ++kind) {  // 0: any value; 1: finite; 2: zeros only
        SCOPED_TRACE(::testing::Message() << dtype_name(t) << " n " << n << " kind " << kind);
        const std::vector<float> x = test_inputs(n, static_cast<uint32_t>(n) * 3 + kind);
        std::vector<uint8_t> buf(n * es);
        int lo = 1, hi = 0;
        for (size_t i = 0; i < n; ++i) {
          uint32_t code = t == DType::kF32 ? std::bit_cast<uint32_t>(x[i])
                                           : encode_ref(x[i], float_format(t), false);
          double v = t == DType::kF32 ? x[i] : decode_ref(code, float_format(t));
          if (kind == 2 || (kind == 1 && !std::isfinite(v))) {
            code = (rng() & 1) << (8 * es - 1);  // ±0
            v = 0.0;
          }
          std::memcpy(buf.data() + i * es, &code, es);
          if (v == 0.0) continue;
          const int e = exponent_of(v);
          if (lo > hi) lo = hi = e;
          lo = std::min(lo, e);
          hi = std::max(hi, e);
        }
        const ExponentRange r = kernels::exponent_range(buf.data(), t, 1, n);
        EXPECT_TRUE(r.known);
        if (lo > hi) {
          EXPECT_GT(r.lo, r.hi);
        } else {
          EXPECT_EQ(r.lo, lo);
          EXPECT_EQ(r.hi, hi);
        }
        if (n < 33) continue;
        // The same values as rows of 31 with a gap of 2 holding inf and a subnormal.
        const size_t cols = 31, ld = 33, rows = n / cols;
        std::vector<uint8_t> strided(rows * ld * es);
        const float gap[2] = {std::numeric_limits<float>::infinity(), 0x1p-140f};
        int slo = 1, shi = 0;
        for (size_t r2 = 0; r2 < rows; ++r2) {
          std::memcpy(strided.data() + r2 * ld * es, buf.data() + r2 * cols * es, cols * es);
          for (size_t g = 0; g < 2; ++g) {
            const uint32_t code = t == DType::kF32 ? std::bit_cast<uint32_t>(gap[g])
                                                   : encode_ref(gap[g], float_format(t), false);
            std::memcpy(strided.data() + (r2 * ld + cols + g) * es, &code, es);
          }
          for (size_t c = 0; c < cols; ++c) {
            uint32_t code = 0;
            std::memcpy(&code, buf.data() + (r2 * cols + c) * es, es);
            const double v = t == DType::kF32 ? std::bit_cast<float>(code)
                                              : decode_ref(code, float_format(t));
            if (v == 0.0) continue;
            const int e = exponent_of(v);
            if (slo > shi) slo = shi = e;
            slo = std::min(slo, e);
            shi = std::max(shi, e);
          }
        }
        const ExponentRange sr = kernels::exponent_range(strided.data(), t, rows, cols, ld);
        if (slo > shi) {
          EXPECT_GT(sr.lo, sr.hi);
        } else {
          EXPECT_EQ(sr.lo, slo);
          EXPECT_EQ(sr.hi, shi);
        }
      }
    }
  }
  const float x[2] = {1.0f, 2.0f};
  EXPECT_THROW(kernels::exponent_range(x, DType::kE4M3, 1, 2), Error);
  EXPECT_THROW(kernels::exponent_range(x, DType::kF32, 2, 2, 1), Error);
}

TEST_P(CastOnTarget, DequantizeEveryCode) {
  for (DType t : kNarrow) {
    const FloatFormat& f = float_format(t);
    const size_t count = size_t{1} << f.bits;
    std::vector<uint8_t> codes(count * dtype_size(t));
    for (uint32_t c = 0; c < count; ++c) std::memcpy(&codes[c * dtype_size(t)], &c, dtype_size(t));
    for (float scale_inv : {1.0f, 0.25f, 3.0f}) {
      std::vector<float> out(count + 3, std::bit_cast<float>(0xA5A5A5A5u));
      std::vector<uint16_t> out16(count + 3, 0xA5A5);
      kernels::dequantize(out.data(), codes.data(), t, count, scale_inv);
      kernels::dequantize_to_bf16(out16.data(), codes.data(), t, count, scale_inv);
      for (uint32_t c = 0; c < count; ++c) {
        const float want = decode_ref(c, f) * scale_inv;
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(out[c])) << c;
        } else {
          ASSERT_EQ(std::bit_cast<uint32_t>(out[c]), std::bit_cast<uint32_t>(want)) << c;
        }
        ASSERT_EQ(out16[c], encode_ref(want, kBF16Format, false)) << dtype_name(t) << " " << c;
      }
      for (size_t i = count; i < out.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), 0xA5A5A5A5u);
      for (size_t i = count; i < out16.size(); ++i) ASSERT_EQ(out16[i], 0xA5A5);
    }
  }
}

TEST_P(CastOnTarget, RoundTripIsIdentityOnNonNaNCodes) {
  for (DType t : kNarrow) {
    const FloatFormat& f = float_format(t);
    const size_t count = size_t{1} << f.bits, es = dtype_size(t);
    std::vector<uint8_t> codes(count * es), back(count * es, kPoison);
    for (uint32_t c = 0; c < count; ++c) std::memcpy(&codes[c * es], &c, es);
    std::vector<float> values(count);
    kernels::dequantize(values.data(), codes.data(), t, count, 1.0f);
    kernels::quantize(back.data(), t, values.data(), count, 1.0f, /*saturate=*/false);
    for (uint32_t c = 0; c < count; ++c) {
      const uint32_t got = load_code(back, c, es);
      if (std::isnan(values[c])) {
        EXPECT_TRUE(std::isnan(decode_ref(got, f))) << c;
      } else {
        ASSERT_EQ(got, c) << dtype_name(t);
      }
    }
  }
}

TEST_P(CastOnTarget, CastTransposeMatchesReference) {
  struct Case {
    size_t rows, cols;
  };
  for (const Case& c : {Case{1, 1}, Case{3, 5}, Case{64, 64}, Case{65, 130}, Case{200, 17},
                        Case{1, 300}, Case{513, 129}}) {
    const size_t n = c.rows * c.cols;
    const std::vector<float> x = test_inputs(n, static_cast<uint32_t>(n));
    for (DType t : {DType::kE4M3, DType::kE5M2, DType::kBF16}) {
      const size_t es = dtype_size(t);
      std::vector<uint8_t> out(n * es + 8, kPoison), out_t(n * es + 8, kPoison);
      const float a =
          kernels::cast_transpose(out.data(), out_t.data(), t, x.data(), c.rows, c.cols, 2.0f);
      EXPECT_EQ(std::isnan(a), std::isnan(kernels::amax(x.data(), n)));
      if (!std::isnan(a)) {
        EXPECT_EQ(a, kernels::amax(x.data(), n));
      }
      for (size_t r = 0; r < c.rows; ++r) {
        for (size_t k = 0; k < c.cols; ++k) {
          const uint32_t want = encode_ref(x[r * c.cols + k] * 2.0f, float_format(t), true);
          ASSERT_EQ(load_code(out, r * c.cols + k, es), want);
          ASSERT_EQ(load_code(out_t, k * c.rows + r, es), want);
        }
      }
      for (size_t i = n * es; i < out.size(); ++i) ASSERT_EQ(out[i], kPoison);
      for (size_t i = n * es; i < out_t.size(); ++i) ASSERT_EQ(out_t[i], kPoison);
    }
  }
}

// amax of stored 16-bit values (master weights) against the reference decode of every code.
TEST(CastApi, AmaxOfStoredF16AndBF16) {
  std::mt19937 rng(17);
  for (DType t : {DType::kF16, DType::kBF16}) {
    const FloatFormat f = float_format(t);
    std::vector<uint16_t> codes(100003);
    std::uniform_int_distribution<uint32_t> d(0, 0xFFFF);
    double want = 0;
    for (uint16_t& c : codes) {
      do c = static_cast<uint16_t>(d(rng));
      while (std::isnan(decode_ref(c, f)) || std::isinf(decode_ref(c, f)));
      want = std::max(want, std::fabs(static_cast<double>(decode_ref(c, f))));
    }
    EXPECT_EQ(kernels::amax(codes.data(), t, codes.size(), 0.25f), static_cast<float>(want) * 0.25f)
        << dtype_name(t);
    codes[77777] = static_cast<uint16_t>(f.nan_code);
    EXPECT_TRUE(std::isnan(kernels::amax(codes.data(), t, codes.size(), 1.0f))) << dtype_name(t);
  }
  const float x[3] = {1.0f, -3.0f, 2.0f};
  EXPECT_EQ(kernels::amax(x, DType::kF32, 3, 0.5f), 1.5f);
  EXPECT_THROW(kernels::amax(x, DType::kE4M3, 3, 1.0f), Error);
}

TEST(CastApi, RejectsWrongDTypes) {
  float x = 1.0f;
  uint8_t q = 0;
  EXPECT_THROW(kernels::quantize(&q, DType::kF32, &x, 1, 1.0f), Error);
  EXPECT_THROW(kernels::quantize(&q, DType::kI32, &x, 1, 1.0f), Error);
  EXPECT_THROW(kernels::dequantize(&x, &q, DType::kU8, 1, 1.0f), Error);
}

TEST(SimdTargets, ListsAvx2OrBetterAndScalar) {
  const auto targets = simd::available_targets();
  ASSERT_FALSE(targets.empty());
  EXPECT_EQ(targets.back().name, "scalar");
  for (const auto& t : targets) EXPECT_NE(kernels::detail::quantize_chunk_for(t.bits), nullptr);
}

FP8LM_INSTANTIATE_ON_EVERY_TARGET(CastOnTarget);

}  // namespace
}  // namespace fp8lm
