// Element-wise kernels behind the collectives of distributed/ (docs/numerics.md): sums of narrow-format
// payloads for user-defined MPI reduction operators (decode both operands, add in float32,
// round back once), the E4M3 requantization to a shared scale, and the saturation count
// that drives automatic gradient scaling. Backend-neutral: pointers and counts only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fp8lm::kernels {

// inout[i] = E4M3(decode(in[i]) + decode(inout[i])), rounded to nearest even and saturated
// to ±448; NaN stays NaN. The float32 sum of two E4M3 values is exact, so this rounds once.
void e4m3_add(uint8_t* inout, const uint8_t* in, size_t n);

// inout[i] = BF16(decode(in[i]) + decode(inout[i])), the sum in float32, then nearest even
// with IEEE overflow (→ ±inf), so non-finite gradients stay visible after the reduction.
void bf16_add(uint16_t* inout, const uint16_t* in, size_t n);

// dst[i] = E4M3(float32(decode(src[i]) · factor)), nearest even, saturating. dst may be src.
void e4m3_rescale(uint8_t* dst, const uint8_t* src, size_t n, float factor);

// Number of codes at the E4M3 maximum magnitude (±448: 0x7E, 0xFE).
size_t e4m3_count_saturated(const uint8_t* codes, size_t n);

}  // namespace fp8lm::kernels
