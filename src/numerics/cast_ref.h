// Scalar reference casts between float32 and the narrow formats, written with exact
// integer arithmetic on the binary32 encoding (no floating-point operations), so they
// are an independent oracle for the SIMD kernels. Also the scalar path for odd jobs.
#pragma once

#include <cstdint>

#include "numerics/float_format.h"

namespace fp8lm {

// float32 → format code (sign in the format's top bit). Round to nearest, ties to even,
// on the exact input value. saturate: overflow and ±inf → ±max finite, NaN → NaN.
// Otherwise overflow → ±inf (formats with inf) or NaN (E4M3).
uint32_t encode_ref(float x, const FloatFormat& f, bool saturate = true);

// Format code → float32, exact. NaN codes give a quiet NaN with the code's sign.
float decode_ref(uint32_t code, const FloatFormat& f);

inline uint8_t to_e4m3_ref(float x, bool saturate = true) {
  return static_cast<uint8_t>(encode_ref(x, kE4M3Format, saturate));
}
inline uint8_t to_e5m2_ref(float x, bool saturate = true) {
  return static_cast<uint8_t>(encode_ref(x, kE5M2Format, saturate));
}
inline float from_e4m3_ref(uint8_t q) { return decode_ref(q, kE4M3Format); }
inline float from_e5m2_ref(uint8_t q) { return decode_ref(q, kE5M2Format); }

}  // namespace fp8lm
