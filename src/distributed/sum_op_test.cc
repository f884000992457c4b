// The kernels behind the reduction operators (kernels/reduce_ops.h) against the scalar
// reference codec, on every SIMD target: the E4M3 and E5M2 sums over all 256×256 code pairs
// (decoded exactly, added in double, rounded by the reference encoder), BF16 sums, the FP8
// rescale, the saturation count. Then the MPI operator itself over all pairs at N = 2.
#include "kernels/reduce_ops.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "distributed/dist_test_util.h"
#include "distributed/fp8_reduce.h"
#include "distributed/world.h"
#include "kernels/simd_test_util.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

using dist::test::e4m3_sum_ref;
using dist::test::expect_codes_eq;
using dist::test::kPoison;

bool e4m3_is_nan(uint8_t c) { return (c & 0x7F) == 0x7F; }

constexpr DType kFp8Formats[] = {DType::kE4M3, DType::kE5M2};

// The sum of two codes of `format` as the reference defines it: exact, then rounded once.
// A NaN sum is given as the kernel's code for it when that is a NaN too (NaN's sign and
// payload are not specified).
uint8_t fp8_sum_ref(DType format, uint8_t a, uint8_t b, uint8_t got) {
  const FloatFormat& f = float_format(format);
  const double sum = static_cast<double>(decode_ref(a, f)) + decode_ref(b, f);
  if (std::isnan(sum) && std::isnan(decode_ref(got, f))) return got;
  return static_cast<uint8_t>(encode_ref(static_cast<float>(sum), f));
}

// All 65536 pairs: a[i] = i mod 256, b[i] = i / 256.
std::vector<uint8_t> pair_operand(bool high) {
  std::vector<uint8_t> v(65536);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(high ? i >> 8 : i & 0xFF);
  return v;
}

class ReduceOpsOnTarget : public OnEveryTarget {};

TEST_P(ReduceOpsOnTarget, Fp8SumOfEveryPairMatchesReference) {
  const std::vector<uint8_t> a = pair_operand(false), b = pair_operand(true);
  for (DType format : kFp8Formats) {
    const std::string name(dtype_name(format));
    // Several lengths and offsets, so vector bodies, tails and threaded chunks all run.
    for (size_t n : {size_t{1}, size_t{13}, size_t{64}, size_t{65536}}) {
      for (size_t start = 0; start + n <= a.size(); start += (n == 65536 ? n : 4099)) {
        std::vector<uint8_t> inout(b.begin() + static_cast<std::ptrdiff_t>(start),
                                   b.begin() + static_cast<std::ptrdiff_t>(start + n));
        inout.push_back(kPoison);
        kernels::fp8_add(format, inout.data(), a.data() + start, n);
        std::vector<uint8_t> want(a.size());
        for (size_t i = start; i < start + n; ++i)
          want[i] = fp8_sum_ref(format, a[i], b[i], inout[i - start]);
        expect_codes_eq(std::span(inout).first(n), std::span(want).subspan(start, n),
                        name + " add n=" + std::to_string(n));
        EXPECT_EQ(inout[n], kPoison) << "wrote past the end, n=" << n;
      }
    }
  }
}

TEST_P(ReduceOpsOnTarget, E4M3SumSaturatesAndKeepsNaN) {
  // 448 + 448, 448 + 16 (464 ties to 448), −448 − 32, 256 + 240 = 496 → 448; NaN + 1.
  const std::vector<uint8_t> a = {0x7E, 0x7E, 0xFE, 0x78, 0x7F, 0x38, 0x80, 0x00};
  const std::vector<uint8_t> b = {0x7E, 0x58, 0xE0, 0x77, 0x38, 0xFF, 0x80, 0x80};
  std::vector<uint8_t> inout = b;
  kernels::fp8_add(DType::kE4M3, inout.data(), a.data(), a.size());
  EXPECT_EQ(inout[0], 0x7E);
  EXPECT_EQ(inout[1], 0x7E);
  EXPECT_EQ(inout[2], 0xFE);
  EXPECT_EQ(inout[3], 0x7E);
  EXPECT_TRUE(e4m3_is_nan(inout[4]));
  EXPECT_TRUE(e4m3_is_nan(inout[5]));
  EXPECT_EQ(inout[6], 0x80);  // −0 + −0 = −0
  EXPECT_EQ(inout[7], 0x00);  // +0 + −0 = +0
  // E5M2: 57344 + 57344 saturates to 57344 (0x7B), not to inf.
  uint8_t big = 0x7B;
  const uint8_t big2 = 0x7B;
  kernels::fp8_add(DType::kE5M2, &big, &big2, 1);
  EXPECT_EQ(big, 0x7B);
}

TEST_P(ReduceOpsOnTarget, BF16SumMatchesFloatSumRoundedByReference) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits(0, 0xFFFF);
  const uint16_t specials[] = {0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F7F,
                               0xFF7F, 0x0001, 0x8001, 0x0080, 0x3F80, 0xBF80};
  const size_t n = 100003;
  std::vector<uint16_t> a(n), b(n);
  for (size_t i = 0; i < n; ++i) {
    a[i] = static_cast<uint16_t>(bits(rng));
    b[i] = static_cast<uint16_t>(bits(rng));
    // Nearby magnitudes too, where the float32 sum does not swamp one operand.
    if (i % 3 == 1) b[i] = static_cast<uint16_t>((a[i] ^ 0x8000) + bits(rng) % 64 - 32);
  }
  for (size_t i = 0; i < std::size(specials); ++i)
    for (size_t j = 0; j < std::size(specials); ++j) {
      a[i * std::size(specials) + j] = specials[i];
      b[i * std::size(specials) + j] = specials[j];
    }
  std::vector<uint16_t> inout = b;
  inout.push_back(kPoison);
  kernels::bf16_add(inout.data(), a.data(), n);
  int bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float sum = decode_ref(a[i], kBF16Format) + decode_ref(b[i], kBF16Format);
    const uint32_t want = encode_ref(sum, kBF16Format, /*saturate=*/false);
    const bool ok = std::isnan(sum) ? std::isnan(decode_ref(inout[i], kBF16Format))
                                    : inout[i] == want;
    if (!ok && ++bad <= 5)
      ADD_FAILURE() << "i=" << i << " a=0x" << std::hex << a[i] << " b=0x" << b[i] << " want 0x"
                    << want << " got 0x" << inout[i];
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(inout[n], kPoison);
}

TEST_P(ReduceOpsOnTarget, Fp8RescaleMatchesReference) {
  const std::vector<uint8_t> codes = pair_operand(false);  // every code, 256 times
  for (DType format : kFp8Formats) {
    const FloatFormat& f = float_format(format);
    const std::string name = std::string(dtype_name(format)) + " rescale";
    for (float factor : {1.0f, 0.5f, 0.125f, 3.0f, 1.0006933f, 1e-3f, 1e3f}) {
      std::vector<uint8_t> out(codes.size() + 1, kPoison);
      kernels::fp8_rescale(format, out.data(), codes.data(), codes.size(), factor);
      std::vector<uint8_t> want(codes.size());
      for (size_t i = 0; i < codes.size(); ++i)
        want[i] = static_cast<uint8_t>(encode_ref(decode_ref(codes[i], f) * factor, f));
      expect_codes_eq(std::span(out).first(want.size()), want, name);
      EXPECT_EQ(out.back(), kPoison);
      // In place gives the same.
      std::vector<uint8_t> in_place = codes;
      kernels::fp8_rescale(format, in_place.data(), in_place.data(), in_place.size(), factor);
      expect_codes_eq(in_place, want, name + " in place");
    }
  }
}

TEST_P(ReduceOpsOnTarget, CountsSaturatedCodes) {
  for (DType format : kFp8Formats) {
    const uint8_t max = format == DType::kE4M3 ? 0x7E : 0x7B;
    std::vector<uint8_t> codes(200001, 0x38);
    size_t want = 0;
    for (size_t i = 0; i < codes.size(); i += 997) {
      codes[i] = (i / 997) % 2 ? static_cast<uint8_t>(max | 0x80) : max;
      ++want;
    }
    codes[5] = 0x7F;  // NaN, inf and the code below the max are not saturated
    codes[6] = static_cast<uint8_t>(max - 1);
    codes[7] = 0x7C;
    EXPECT_EQ(kernels::fp8_count_saturated(format, codes.data(), codes.size()), want);
    EXPECT_EQ(kernels::fp8_count_saturated(format, codes.data(), 1), 1u);
    EXPECT_EQ(kernels::fp8_count_saturated(format, codes.data(), 0), 0u);
  }
}

FP8LM_INSTANTIATE_ON_EVERY_TARGET(ReduceOpsOnTarget);

// The MPI operator over all pairs: rank 0 holds a, rank 1 b; post scaling with scale_inv 1
// leaves the codes as they are before the sum, so the result is the pairwise E4M3 sum.
TEST(Fp8SumOp, EveryPairThroughMpiMatchesReference) {
  if (dist::size() != 2) GTEST_SKIP() << "needs 2 ranks";
  std::vector<uint8_t> codes = pair_operand(dist::rank() == 1);
  float span_scale = 1.0f;
  const MutableScaledView span = tensor_view(static_cast<void*>(codes.data()), DType::kE4M3,
      Shape{static_cast<int64_t>(codes.size())}, &span_scale);
  dist::Fp8GradReducer reducer(dist::Fp8Scaling::kPost, size_t{1} << 12);  // 16 windows
  reducer.allreduce(std::span<const MutableScaledView>(&span, 1));
  const std::vector<uint8_t> a = pair_operand(false), b = pair_operand(true);
  std::vector<uint8_t> want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = e4m3_sum_ref(a[i], b[i]);
  expect_codes_eq(codes, want, "MPI E4M3 sum");
  EXPECT_EQ(span.tensor_scale(), 0.5f);  // ÷2 folded into scale_inv
}

}  // namespace
}  // namespace fp8lm
