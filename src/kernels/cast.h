// Cast kernels: float32 <-> E4M3 / E5M2 / F16 / BF16 with per-tensor scales, at memory
// speed. Backend-neutral interface: pointers, element counts, dtypes and scales only.
// Conventions (docs/numerics.md, Scaling): q = cast(x · scale), x ≈ q · scale_inv.
#pragma once

#include <cstddef>
#include <cstdint>

#include "numerics/block_scales.h"
#include "numerics/dtype.h"
#include "numerics/exponent_range.h"
#include "tensor/scaled_view.h"

namespace fp8lm::kernels {

// dst[i] = cast(src[i] · scale) in dst_type (f16, bf16, e4m3 or e5m2), round to nearest
// even; `saturate` as in docs/numerics.md. Returns amax = max |src[i]| of the unscaled input
// (NaN when any input is NaN), computed in the same pass.
float quantize(void* dst, DType dst_type, const float* src, size_t n, float scale,
               bool saturate = true);

// max |src[i]|; NaN when any element is NaN, 0 for n == 0.
float amax(const float* src, size_t n);
// max |decode(src[i])| · scale_inv for src_type f32, f16 or bf16 (a stored master weight).
float amax(const void* src, DType src_type, size_t n, float scale_inv);

// The exponents of the nonzero values of src [rows, cols] (row stride ld, 0 = cols) as
// numerics/exponent_range.h defines them; src_type f32, f16 or bf16.
ExponentRange exponent_range(const void* src, DType src_type, size_t rows, size_t cols,
                             size_t ld = 0);

// dst[i] = decode(src[i]) · scale_inv, with src_type f32, f16, bf16, e4m3 or e5m2.
void dequantize(float* dst, const void* src, DType src_type, size_t n, float scale_inv);
// The same, rounded to bf16 (nearest even; overflow → inf, as IEEE).
void dequantize_to_bf16(uint16_t* dst, const void* src, DType src_type, size_t n,
                        float scale_inv);

// Cast + transpose in one pass over src [rows, cols] (row-major): dst [rows, cols] (may be
// null) and dst_t [cols, rows] get cast(src · scale). Returns the amax of src.
float cast_transpose(void* dst, void* dst_t, DType dst_type, const float* src, size_t rows,
                     size_t cols, float scale, bool saturate = true);

// Block-scaled cast of src [rows, cols] (row-major): every block of shape.rows × shape.cols
// (0 = the whole dimension) gets s = block_scale(block amax, max of dst_type), written to
// `scales` (grid of grid_extent(rows) × grid_extent(cols), in shape.scale_dtype), and
// dst = cast(src / s). A block holding inf/NaN gets s = NaN and codes cast(src).
// Returns the amax of src.
float quantize_blocks(void* dst, DType dst_type, const float* src, size_t rows, size_t cols,
                      const BlockShape& shape, void* scales, bool saturate = true);
// dst = decode(src) · s of each element's block.
void dequantize_blocks(float* dst, const void* src, DType src_type, size_t rows, size_t cols,
                       const BlockScales& scales);
// dst (v.numel() floats) = the values of any view: per tensor, per block or unscaled.
void dequantize(float* dst, const ScaledView& v);
// Quantizes src [v.rows(), v.cols()] into a block-scaled view (payload and grid written);
// returns the amax of src.
float quantize_blocks(const MutableScaledView& v, const float* src, bool saturate = true);

namespace detail {
// Single-threaded chunk kernels of one SIMD target (a bit from simd::available_targets()),
// for tests that sweep targets in parallel. Types are ints (DType values).
using QuantizeChunkFn = uint32_t (*)(void* dst, int dst_type, const float* src, size_t n,
                                     float scale, bool saturate);  // returns amax bits
QuantizeChunkFn quantize_chunk_for(int64_t target);
}  // namespace detail

}  // namespace fp8lm::kernels
