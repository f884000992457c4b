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

#include <bit>
#include <cstddef>

namespace fp8lm {

// floor(log2 |x|) over a matrix's nonzero values: lo the least, hi the greatest. A subnormal
// float32 counts as -127 and inf/NaN as 128 (both then fail the rule). No nonzero value:
// lo > hi. `known` false: not measured (the rule then fails).
struct ExponentRange {
  int lo = 1, hi = 0;
  bool known = false;
};

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
