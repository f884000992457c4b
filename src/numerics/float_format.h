// Bit layouts of the narrow floating formats (docs/numerics.md). Shared by the scalar reference
// and the SIMD kernels; the two implement the rounding independently.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "numerics/dtype.h"

namespace fp8lm {

struct FloatFormat {
  int bits;       // storage width: 8 or 16
  int exp_bits;   // exponent field width
  int man_bits;   // explicit mantissa bits
  int bias;       // exponent bias
  bool has_inf;   // IEEE-style: all-ones exponent is inf (mantissa 0) or NaN
  uint32_t max_code;  // magnitude code of the largest finite value
  uint32_t inf_code;  // magnitude code of +inf (has_inf only)
  uint32_t nan_code;  // magnitude code written for NaN (quiet NaN, sign kept)

  constexpr uint32_t sign_bit() const { return 1u << (bits - 1); }
  constexpr uint32_t magnitude_mask() const { return sign_bit() - 1; }
  constexpr int min_normal_exp() const { return 1 - bias; }
};

// OCP E4M3FN: no infinity; S.1111.111 is the only NaN; max 448 = 0x7E.
inline constexpr FloatFormat kE4M3Format{8, 4, 3, 7, false, 0x7E, 0, 0x7F};
// OCP E5M2: IEEE-like; max 57344 = 0x7B, inf 0x7C, quiet NaN 0x7E.
inline constexpr FloatFormat kE5M2Format{8, 5, 2, 15, true, 0x7B, 0x7C, 0x7E};
// IEEE binary16.
inline constexpr FloatFormat kF16Format{16, 5, 10, 15, true, 0x7BFF, 0x7C00, 0x7E00};
// bfloat16: the top half of a binary32.
inline constexpr FloatFormat kBF16Format{16, 8, 7, 127, true, 0x7F7F, 0x7F80, 0x7FC0};

// The format of a narrow floating dtype (f16, bf16, e4m3, e5m2).
constexpr const FloatFormat& float_format(DType t) {
  switch (t) {
    case DType::kE4M3:
      return kE4M3Format;
    case DType::kE5M2:
      return kE5M2Format;
    case DType::kF16:
      return kF16Format;
    case DType::kBF16:
      return kBF16Format;
    default:
      throw std::invalid_argument("float_format: not a narrow floating dtype");
  }
}

}  // namespace fp8lm
