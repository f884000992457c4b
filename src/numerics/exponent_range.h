// The binary exponents a matrix's values span, and the rule that uses them: when a product of
// two BF16-valued matrices may run on vdpbf16ps and still give the FMA path's bits.
//
// vdpbf16ps adds two BF16 products per FP32 lane, each exact and rounded in turn as an FMA
// would (kernels/gemm_dot.h), but it flushes subnormal BF16 inputs and subnormal results
// (partial sums) to zero, which FMAs do not. A BF16 value is an 8-bit integer times
// 2^(e − 7), so every product of A's and B's values, and every partial sum of them (rounded
// to FP32, whose grid there is never finer), is a multiple of 2^(loA + loB − 14): if that is
// at least 2^-126 no nonzero partial sum is subnormal and the flush never applies. Products
// are exact (8 × 8 significant bits) and, with the sum bound below, no sum overflows.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fp8lm {

// floor(log2 |x|) over a matrix's nonzero values: lo the least, hi the greatest. A subnormal
// float32 counts as -127 and inf/NaN as 128 (both then fail the rule). No nonzero value:
// lo > hi. `known` false: not measured (the rule then fails).
struct ExponentRange {
  int lo = 1, hi = 0;
  bool known = false;
};

// The range of two matrices' values together.
inline ExponentRange merged(const ExponentRange& a, const ExponentRange& b) {
  const bool known = a.known && b.known;
  if (a.lo > a.hi) return {b.lo, b.hi, known};
  if (b.lo > b.hi) return {a.lo, a.hi, known};
  return {std::min(a.lo, b.lo), std::max(a.hi, b.hi), known};
}

// Kernels accumulate biased float32 exponents (subnormal 0, inf/NaN 255) as one word:
// the least over nonzero values (0x1FF while none) << 16 | the greatest.
inline constexpr uint32_t kNoExponentBounds = 0x1FFu << 16;
inline uint32_t merge_exponent_bounds(uint32_t a, uint32_t b) {
  return (std::min(a >> 16, b >> 16) << 16) | std::max(a & 0xFFFFu, b & 0xFFFFu);
}
// The bounds of one more value.
inline uint32_t add_exponent_bounds(uint32_t bounds, float x) {
  const uint32_t mag = std::bit_cast<uint32_t>(x) & 0x7FFFFFFFu;
  return mag == 0 ? bounds : merge_exponent_bounds(bounds, (mag >> 23) * 0x10001u);
}
inline ExponentRange exponent_range_of_bounds(uint32_t bounds) {
  ExponentRange e;
  e.known = true;
  if ((bounds >> 16) == 0x1FF) return e;  // no nonzero value
  e.lo = static_cast<int>(bounds >> 16) - 127;
  e.hi = static_cast<int>(bounds & 0xFFFFu) - 127;
  return e;
}
// The range of several chunks' bounds together (a threaded kernel's partial results).
inline ExponentRange exponent_range_of_bounds(const std::vector<uint32_t>& chunks) {
  uint32_t all = kNoExponentBounds;
  for (const uint32_t b : chunks) all = merge_exponent_bounds(all, b);
  return exponent_range_of_bounds(all);
}

// Whether op(A)·op(B) over K may use the dot products with the FMA path's bits, A's and B's
// values entering the product as BF16(stored value) — rounding to BF16 keeps an exponent or
// raises it by one, never lowers it, so the stored values' ranges bound the BF16 ones.
inline bool bf16_dot_exact(const ExponentRange& a, const ExponentRange& b, size_t K) {
  if (!a.known || !b.known) return false;
  if (a.lo > a.hi || b.lo > b.hi) return true;  // an all-zero operand: every sum is 0
  const int k_bits = static_cast<int>(std::bit_width(K));
  // No subnormal input or partial sum; finite BF16 values (|x| < 2^127 cannot round to inf);
  // |a·b| ≤ 2^(hiA+1) · 2^(hiB+1), and K of them < 2^128.
  return a.lo >= -126 && b.lo >= -126 && a.lo + b.lo >= -112 && a.hi < 127 && b.hi < 127 &&
         a.hi + b.hi + 2 + k_bits <= 127;
}

}  // namespace fp8lm
