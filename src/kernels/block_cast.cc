// Block-scaled casts: float32 [rows, cols] → narrow codes with one power-of-two scale per
// block (numerics/block_scales.h), and back. Two passes per block row: block amaxes, then
// the cast of each row segment with its block's factor.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/block_cast.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/blocks-inl.h"
#include "kernels/quantize-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {

void RowBlockAmax(const float* x, size_t n, size_t bc, uint32_t* amax_bits) {
  BlockAmaxRun(x, n, bc, amax_bits);
}

// dst[t] = cast(x[t] · mul[t / bc]) (bc == 1: per element).
template <FloatFormat F>
void QuantizeRowT(uint8_t* HWY_RESTRICT dst, const float* HWY_RESTRICT x, size_t n, size_t bc,
                  const float* HWY_RESTRICT mul, bool saturate) {
  constexpr size_t kOutBytes = F.bits / 8;
  if (bc != 1) {
    for (size_t t = 0; t < n; t += bc)
      QuantizeT<F>(dst + t * kOutBytes, x + t, std::min(bc, n - t), mul[t / bc], saturate);
    return;
  }
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  const uint32_t overflow_code = OverflowCode<F>(saturate);
  for (size_t t = 0; t < n; t += N) {
    const size_t count = std::min(N, n - t);
    HWY_ALIGN float xb[HWY_MAX_BYTES / sizeof(float)] = {};
    HWY_ALIGN float mb[HWY_MAX_BYTES / sizeof(float)] = {};
    HWY_ALIGN uint8_t codes[HWY_MAX_BYTES] = {};
    std::memcpy(xb, x + t, count * sizeof(float));
    std::memcpy(mb, mul + t, count * sizeof(float));
    const auto v = hn::Mul(hn::Load(df, xb), hn::Load(df, mb));
    EncodeStore<F>(df, v, overflow_code, codes);
    std::memcpy(dst + t * kOutBytes, codes, count * kOutBytes);
  }
}

void QuantizeRow(void* dst, int type, const float* x, size_t n, size_t bc, const float* mul,
                 bool saturate) {
  auto* o = static_cast<uint8_t*>(dst);
  switch (static_cast<DType>(type)) {
    case DType::kE4M3:
      return QuantizeRowT<kE4M3Format>(o, x, n, bc, mul, saturate);
    case DType::kE5M2:
      return QuantizeRowT<kE5M2Format>(o, x, n, bc, mul, saturate);
    case DType::kF16:
      return QuantizeRowT<kF16Format>(o, x, n, bc, mul, saturate);
    default:
      return QuantizeRowT<kBF16Format>(o, x, n, bc, mul, saturate);
  }
}

// dst[t] = decode(src[t]) · s[t / bc].
template <int kSrc>
void DequantizeRowT(float* HWY_RESTRICT dst, const uint8_t* HWY_RESTRICT src, size_t n, size_t bc,
                    const float* HWY_RESTRICT s) {
  const hn::ScalableTag<float> df;
  constexpr size_t kBytes = dtype_size(static_cast<DType>(kSrc));
  const size_t N = hn::Lanes(df);
  size_t t = 0;
  for (; t + N <= n; t += N) hn::StoreU(LoadAsF32<kSrc>(df, src + t * kBytes), df, dst + t);
  if (t < n) {
    HWY_ALIGN uint8_t in[HWY_MAX_BYTES] = {};
    HWY_ALIGN float out[HWY_MAX_BYTES / sizeof(float)];
    std::memcpy(in, src + t * kBytes, (n - t) * kBytes);
    hn::Store(LoadAsF32<kSrc>(df, in), df, out);
    std::memcpy(dst + t, out, (n - t) * sizeof(float));
  }
  ScaleRun(dst, n, 0, s, bc);
}

void DequantizeRow(float* dst, const void* src, int type, size_t n, size_t bc, const float* s) {
  const auto* p = static_cast<const uint8_t*>(src);
  switch (static_cast<DType>(type)) {
    case DType::kF32:
      return DequantizeRowT<static_cast<int>(DType::kF32)>(dst, p, n, bc, s);
    case DType::kF16:
      return DequantizeRowT<static_cast<int>(DType::kF16)>(dst, p, n, bc, s);
    case DType::kBF16:
      return DequantizeRowT<static_cast<int>(DType::kBF16)>(dst, p, n, bc, s);
    case DType::kE4M3:
      return DequantizeRowT<static_cast<int>(DType::kE4M3)>(dst, p, n, bc, s);
    default:
      return DequantizeRowT<static_cast<int>(DType::kE5M2)>(dst, p, n, bc, s);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/check.h"
#include "core/parallel.h"
#include "kernels/cast.h"

namespace fp8lm {
HWY_EXPORT(RowBlockAmax);
HWY_EXPORT(QuantizeRow);
HWY_EXPORT(DequantizeRow);

namespace kernels {
namespace {

// Block extents with 0 meaning "the whole dimension" (per-tensor).
size_t extent(uint32_t block, size_t n) { return block ? block : std::max<size_t>(n, 1); }

void check_grid(const BlockShape& shape, const char* what) {
  FP8LM_CHECK(shape.scale_dtype == DType::kF32 || shape.scale_dtype == DType::kE8M0, what,
              ": block scales must be f32 or e8m0, got ", dtype_name(shape.scale_dtype));
}

// Scale grid row g as floats (converted from e8m0 when needed).
const float* grid_row(const BlockScales& s, size_t ld, size_t g, size_t n, std::vector<float>& tmp) {
  if (grid_is_aligned_f32(s)) return static_cast<const float*>(s.data) + g * ld;
  tmp.resize(n);
  for (size_t j = 0; j < n; ++j) tmp[j] = block_scale_at(s, ld, g, j);
  return tmp.data();
}

}  // namespace

float quantize_blocks(void* dst, DType dst_type, const float* src, size_t rows, size_t cols,
                      const BlockShape& shape, void* scales, bool saturate) {
  FP8LM_CHECK(dst_type == DType::kE4M3 || dst_type == DType::kE5M2 ||
                  dst_type == DType::kF16 || dst_type == DType::kBF16,
              "quantize_blocks: destination must be e4m3, e5m2, f16 or bf16, got ",
              dtype_name(dst_type));
  check_grid(shape, "quantize_blocks");
  if (rows == 0 || cols == 0) return 0.0f;
  const size_t br = extent(shape.rows, rows), bc = extent(shape.cols, cols);
  const size_t grid_rows = (rows + br - 1) / br, grid_cols = (cols + bc - 1) / bc;
  const float fmax = static_cast<float>(info(dst_type).max_finite);
  const size_t es = dtype_size(dst_type);
  // Block rows are independent: split them over the threads, at least ~64 Ki elements each.
  const size_t min_groups = std::max<size_t>(1, (size_t{1} << 16) / (br * cols));
  std::vector<uint32_t> partial(chunk_count(grid_rows, min_groups), 0);
  parallel_for(grid_rows, min_groups, 1, [&](size_t chunk, size_t g0, size_t g1) {
    std::vector<uint32_t> amax(grid_cols);
    std::vector<float> mul(grid_cols);
    uint32_t m = 0;
    for (size_t g = g0; g < g1; ++g) {
      const size_t r0 = g * br, r1 = std::min(rows, r0 + br);
      std::fill(amax.begin(), amax.end(), 0u);
      for (size_t r = r0; r < r1; ++r)
        HWY_DYNAMIC_DISPATCH(RowBlockAmax)(src + r * cols, cols, bc, amax.data());
      for (size_t j = 0; j < grid_cols; ++j) {
        m = std::max(m, amax[j]);
        const float s = block_scale(std::bit_cast<float>(amax[j]), fmax);
        mul[j] = std::isnan(s) ? 1.0f : 1.0f / s;  // exact: s is a power of two
        if (shape.scale_dtype == DType::kF32)
          static_cast<float*>(scales)[g * grid_cols + j] = s;
        else
          static_cast<uint8_t*>(scales)[g * grid_cols + j] = float_to_e8m0(s);
      }
      for (size_t r = r0; r < r1; ++r)
        HWY_DYNAMIC_DISPATCH(QuantizeRow)(static_cast<uint8_t*>(dst) + r * cols * es,
                                          static_cast<int>(dst_type), src + r * cols, cols, bc,
                                          mul.data(), saturate);
    }
    partial[chunk] = m;
  });
  return std::bit_cast<float>(*std::max_element(partial.begin(), partial.end()));
}

void dequantize_blocks(float* dst, const void* src, DType src_type, size_t rows, size_t cols,
                       const BlockScales& scales) {
  FP8LM_CHECK(is_float(src_type), "dequantize_blocks: source must be a floating dtype, got ",
              dtype_name(src_type));
  check_grid(scales.shape, "dequantize_blocks");
  if (rows == 0 || cols == 0) return;
  const size_t br = extent(scales.shape.rows, rows), bc = extent(scales.shape.cols, cols);
  const size_t grid_cols = (cols + bc - 1) / bc;
  const size_t ld = scales.ld ? scales.ld : grid_cols;
  const size_t es = dtype_size(src_type);
  const size_t min_rows = std::max<size_t>(1, (size_t{1} << 16) / cols);
  parallel_for(rows, min_rows, 1, [&](size_t, size_t r0, size_t r1) {
    std::vector<float> tmp;
    for (size_t r = r0; r < r1; ++r) {
      const float* s = grid_row(scales, ld, r / br, grid_cols, tmp);
      HWY_DYNAMIC_DISPATCH(DequantizeRow)(dst + r * cols,
                                          static_cast<const uint8_t*>(src) + r * cols * es,
                                          static_cast<int>(src_type), cols, bc, s);
    }
  });
}

void dequantize(float* dst, const ScaledView& v) {
  if (v.mode == ScalingMode::kNone || v.mode == ScalingMode::kTensor) {
    dequantize(dst, v.data.data, v.data.dtype, v.numel(), v.tensor_scale());
    return;
  }
  dequantize_blocks(dst, v.data.data, v.data.dtype, v.rows(), v.cols(), v.blocks());
}

float quantize_blocks(const MutableScaledView& v, const float* src, bool saturate) {
  FP8LM_CHECK(block_shape(v.mode).cols != 0, "quantize_blocks: a ", scaling_mode_name(v.mode),
              " view is not block-scaled");
  BlockShape shape = block_shape(v.mode);
  FP8LM_CHECK(v.scales.dtype == shape.scale_dtype && v.scales.shape ==
                  scale_grid_shape(v.data.shape, v.mode),
              "quantize_blocks: a ", scaling_mode_name(v.mode), " grid of ", v.data.shape.str(),
              " is ", dtype_name(shape.scale_dtype), " ",
              scale_grid_shape(v.data.shape, v.mode).str(), ", got ", dtype_name(v.scales.dtype),
              " ", v.scales.shape.str());
  return quantize_blocks(v.data.data, v.data.dtype, src, v.rows(), v.cols(), shape,
                         v.scales.data, saturate);
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
