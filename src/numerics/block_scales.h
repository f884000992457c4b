// Fine-grained scaling of a 2-D stored matrix (docs/numerics.md, Block scaling): the matrix
// [rows, cols] is cut into blocks of block_rows × block_cols stored elements, and each block
// has one scale: x[r][c] ≈ q[r][c] · s[r / block_rows][c / block_cols]. The scales form a
// row-major grid of ceil(rows / block_rows) × ceil(cols / block_cols) values, f32 or e8m0.
// Backend-neutral facts and the scale rule; the kernels that apply them live in kernels/.
#pragma once

#include <bit>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "numerics/dtype.h"

namespace fp8lm {

// The layouts a tensor's scale can have. Names are what files, configs and `inspect` show.
enum class ScalingMode : uint8_t {
  kNone,      // unscaled (f32, bf16, ...)
  kTensor,    // one scale for the whole tensor
  kRows1x128, // 1×128 tiles along each row (activations, output gradients)
  kCols128x1, // 128×1 tiles down each column (an operand whose reduction runs down columns)
  kBlock128,  // 128×128 blocks (weights)
  kMx32,      // OCP MX: 1×32 along each row, e8m0 scales
  kMx32x1,    // OCP MX down each column: 32×1, e8m0 scales
};
std::string_view scaling_mode_name(ScalingMode m);  // "tensor", "1x128", "128x128", "mx32"...

struct BlockShape {
  uint32_t rows = 0, cols = 0;  // 0 × 0: one block (per-tensor)
  DType scale_dtype = DType::kF32;
};
// Block shape of a block mode (kRows1x128, kCols128x1, kBlock128, kMx32, kMx32x1).
BlockShape block_shape(ScalingMode m);

// Grid extents: ceil(n / block), 1 for a whole-tensor block.
inline size_t grid_extent(size_t n, uint32_t block) { return block ? (n + block - 1) / block : 1; }

// Where a matrix's block scales live: a grid of scales (s, not 1/s: x ≈ q · s).
struct BlockScales {
  const void* data = nullptr;  // null: no block scales
  BlockShape shape;
  size_t ld = 0;  // scales between grid rows; 0 = grid_extent(stored cols, shape.cols)
};

// The block scale rule: the smallest power of two s with amax / s ≤ fmax (rounded up, so no
// element of the block overflows; the OCP MX floor rule can overflow by up to 2×), clamped to
// [2^-126, 2^126] so s and 1/s are normal floats. An all-zero block gets s = 1; a block
// holding inf or NaN gets s = NaN, so it dequantizes to NaN and the step is seen to overflow.
float block_scale(float amax, float fmax);

// E8M0: the exponent field of a binary32, 2^(code − 127); code 255 is NaN.
inline float e8m0_to_float(uint8_t code) {
  if (code == 255) return std::bit_cast<float>(0x7FC00000u);
  if (code == 0) return std::bit_cast<float>(0x00400000u);  // 2^-127, subnormal
  return std::bit_cast<float>(static_cast<uint32_t>(code) << 23);
}
// s must be a power of two in [2^-127, 2^127] or NaN (what block_scale returns).
inline uint8_t float_to_e8m0(float s) {
  const uint32_t bits = std::bit_cast<uint32_t>(s);
  if ((bits & 0x7F800000u) == 0x7F800000u) return 255;
  if (bits == 0x00400000u) return 0;
  return static_cast<uint8_t>(bits >> 23);
}

// The scale of block (r, c) of a grid, as a float (the grid need not be aligned: a file's
// tensors are packed).
inline float block_scale_at(const BlockScales& b, size_t ld, size_t r, size_t c) {
  const size_t i = r * ld + c;
  const auto* bytes = static_cast<const uint8_t*>(b.data);
  if (b.shape.scale_dtype == DType::kE8M0) return e8m0_to_float(bytes[i]);
  float s;
  std::memcpy(&s, bytes + i * sizeof(float), sizeof s);
  return s;
}
// True when an F32 grid can be read in place as floats.
inline bool grid_is_aligned_f32(const BlockScales& b) {
  return b.shape.scale_dtype == DType::kF32 &&
         reinterpret_cast<uintptr_t>(b.data) % alignof(float) == 0;
}

}  // namespace fp8lm
