// Element-wise kernels behind the collectives of distributed/ (docs/numerics.md): sums of narrow-format
// payloads for user-defined MPI reduction operators (decode both operands, add in float32,
// round back once), the FP8 requantization to a shared scale, and the saturation count
// that drives automatic gradient scaling. FP8 kernels take the format (E4M3 or E5M2; the
// MPI path uses E4M3, the in-process simulation both). Backend-neutral: pointers and counts.
#pragma once

#include <cstddef>
#include <cstdint>

#include "numerics/dtype.h"

namespace fp8lm::kernels {

// inout[i] = F(decode(in[i]) + decode(inout[i])), F = E4M3 or E5M2, rounded to nearest even
// and saturated to the format's max (±448, ±57344); NaN stays NaN. The float32 sum of two
// FP8 values is exact, so this rounds once.
void fp8_add(DType format, uint8_t* inout, const uint8_t* in, size_t n);

// inout[i] = BF16(decode(in[i]) + decode(inout[i])), the sum in float32, then nearest even
// with IEEE overflow (→ ±inf), so non-finite gradients stay visible after the reduction.
void bf16_add(uint16_t* inout, const uint16_t* in, size_t n);

// dst[i] = F(float32(decode(src[i]) · factor)), nearest even, saturating. dst may be src.
void fp8_rescale(DType format, uint8_t* dst, const uint8_t* src, size_t n, float factor);

// Number of codes at the format's maximum magnitude (E4M3 ±448, E5M2 ±57344).
size_t fp8_count_saturated(DType format, const uint8_t* codes, size_t n);

}  // namespace fp8lm::kernels
