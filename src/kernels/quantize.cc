// float32 → narrow format with scale and fused amax; amax alone; cast + transpose.
#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/quantize.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/quantize-inl.h"
#include "kernels/vec-inl.h"
#include "numerics/exponent_range.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {

uint32_t QuantizeChunk(void* HWY_RESTRICT out, int dst_type, const float* HWY_RESTRICT in,
                       size_t n, float scale, bool saturate) {
  switch (static_cast<DType>(dst_type)) {
    case DType::kE4M3:
      return QuantizeT<kE4M3Format>(out, in, n, scale, saturate);
    case DType::kE5M2:
      return QuantizeT<kE5M2Format>(out, in, n, scale, saturate);
    case DType::kF16:
      return QuantizeT<kF16Format>(out, in, n, scale, saturate);
    default:
      return QuantizeT<kBF16Format>(out, in, n, scale, saturate);
  }
}

uint32_t AmaxChunk(const float* HWY_RESTRICT in, size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  const size_t N = hn::Lanes(df);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  auto m0 = hn::Zero(di);
  auto m1 = hn::Zero(di);
  size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    m0 = hn::Max(m0, hn::BitCast(di, hn::And(hn::BitCast(du, hn::LoadU(df, in + i)), abs_mask)));
    m1 = hn::Max(m1,
                 hn::BitCast(di, hn::And(hn::BitCast(du, hn::LoadU(df, in + i + N)), abs_mask)));
  }
  uint32_t result = static_cast<uint32_t>(hn::GetLane(hn::MaxOfLanes(di, hn::Max(m0, m1))));
  for (; i < n; ++i) result = std::max(result, std::bit_cast<uint32_t>(in[i]) & 0x7FFFFFFFu);
  return result;
}

// The exponent bounds (numerics/exponent_range.h) of n values of type kSrc (f32, f16, bf16).
template <int kSrc>
uint32_t ExponentBoundsT(const uint8_t* HWY_RESTRICT p, size_t n) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  constexpr size_t kBytes = dtype_size(static_cast<DType>(kSrc));
  ExponentBounds bounds(df);
  size_t i = 0;
  for (; i + N <= n; i += N) bounds.add(LoadAsF32<kSrc>(df, p + i * kBytes));
  if (i < n) {  // zeros past the end change neither bound
    HWY_ALIGN uint8_t buf[hn::MaxLanes(df) * sizeof(float)] = {};
    std::memcpy(buf, p + i * kBytes, (n - i) * kBytes);
    bounds.add(LoadAsF32<kSrc>(df, buf));
  }
  return bounds.packed();
}

uint32_t ExponentBoundsChunk(const uint8_t* HWY_RESTRICT p, int type, size_t n) {
  switch (static_cast<DType>(type)) {
    case DType::kF32:
      return ExponentBoundsT<static_cast<int>(DType::kF32)>(p, n);
    case DType::kF16:
      return ExponentBoundsT<static_cast<int>(DType::kF16)>(p, n);
    default:
      return ExponentBoundsT<static_cast<int>(DType::kBF16)>(p, n);
  }
}

// Largest magnitude code (sign bit cleared) of 16-bit codes; for IEEE-like formats the
// magnitude order of codes is the order of values, and NaN codes sort above inf.
uint32_t MaxMagnitudeCode16Chunk(const uint16_t* HWY_RESTRICT in, size_t n) {
  const hn::ScalableTag<uint16_t> d;
  const size_t N = hn::Lanes(d);
  const auto mask = hn::Set(d, uint16_t{0x7FFF});
  auto m = hn::Zero(d);
  size_t i = 0;
  for (; i + N <= n; i += N) m = hn::Max(m, hn::And(hn::LoadU(d, in + i), mask));
  uint32_t result = hn::GetLane(hn::MaxOfLanes(d, m));
  for (; i < n; ++i) result = std::max<uint32_t>(result, in[i] & 0x7FFFu);
  return result;
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/check.h"
#include "core/parallel.h"
#include "kernels/cast.h"
#include "kernels/simd.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
HWY_EXPORT(QuantizeChunk);
HWY_EXPORT(AmaxChunk);
HWY_EXPORT(MaxMagnitudeCode16Chunk);
HWY_EXPORT(ExponentBoundsChunk);

namespace kernels {
namespace detail {
QuantizeChunkFn quantize_chunk_for(int64_t target) {
  return HWY_DISPATCH_TABLE(QuantizeChunk)[simd::dispatch_index(target)];
}
}  // namespace detail

namespace {

constexpr size_t kMinChunk = 1 << 16;  // below this, threading costs more than it saves

float amax_from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }

void check_narrow(DType t, const char* what) {
  FP8LM_CHECK(t == DType::kE4M3 || t == DType::kE5M2 || t == DType::kF16 || t == DType::kBF16,
              what, ": destination must be e4m3, e5m2, f16 or bf16, got ", dtype_name(t));
}

}  // namespace

float quantize(void* dst, DType dst_type, const float* src, size_t n, float scale,
               bool saturate) {
  check_narrow(dst_type, "quantize");
  if (n == 0) return 0.0f;
  const size_t out_bytes = dtype_size(dst_type);
  std::vector<uint32_t> partial(chunk_count(n, kMinChunk), 0);
  parallel_for(n, kMinChunk, 64, [&](size_t c, size_t begin, size_t end) {
    partial[c] = HWY_DYNAMIC_DISPATCH(QuantizeChunk)(
        static_cast<uint8_t*>(dst) + begin * out_bytes, static_cast<int>(dst_type), src + begin,
        end - begin, scale, saturate);
  });
  return amax_from_bits(*std::max_element(partial.begin(), partial.end()));
}

float amax(const float* src, size_t n) {
  if (n == 0) return 0.0f;
  std::vector<uint32_t> partial(chunk_count(n, kMinChunk), 0);
  parallel_for(n, kMinChunk, 64, [&](size_t c, size_t begin, size_t end) {
    partial[c] = HWY_DYNAMIC_DISPATCH(AmaxChunk)(src + begin, end - begin);
  });
  return amax_from_bits(*std::max_element(partial.begin(), partial.end()));
}

float amax(const void* src, DType src_type, size_t n, float scale_inv) {
  if (src_type == DType::kF32) return amax(static_cast<const float*>(src), n) * scale_inv;
  FP8LM_CHECK(src_type == DType::kF16 || src_type == DType::kBF16,
              "amax: source must be f32, f16 or bf16, got ", dtype_name(src_type));
  if (n == 0) return 0.0f;
  const auto* codes = static_cast<const uint16_t*>(src);
  std::vector<uint32_t> partial(chunk_count(n, kMinChunk), 0);
  parallel_for(n, kMinChunk, 64, [&](size_t c, size_t begin, size_t end) {
    partial[c] = HWY_DYNAMIC_DISPATCH(MaxMagnitudeCode16Chunk)(codes + begin, end - begin);
  });
  const uint32_t code = *std::max_element(partial.begin(), partial.end());
  return static_cast<float>(decode_ref(code, float_format(src_type))) * scale_inv;
}

ExponentRange exponent_range(const void* src, DType src_type, size_t rows, size_t cols,
                             size_t ld) {
  FP8LM_CHECK(src_type == DType::kF32 || src_type == DType::kF16 || src_type == DType::kBF16,
              "exponent_range: source must be f32, f16 or bf16, got ", dtype_name(src_type));
  ld = ld ? ld : cols;
  FP8LM_CHECK(ld >= cols, "exponent_range: row stride ", ld, " is less than ", cols, " columns");
  // Contiguous rows are one run, split evenly; else chunks of whole rows. Each chunk folds
  // into its own bounds.
  const bool run = ld == cols;
  const auto* base = static_cast<const uint8_t*>(src);
  const size_t bytes = dtype_size(src_type);
  const size_t items = run ? rows * cols : rows;
  const size_t min_items =
      run ? kMinChunk : std::max<size_t>(1, kMinChunk / std::max<size_t>(cols, 1));
  std::vector<uint32_t> bounds(chunk_count(items, min_items), kNoExponentBounds);
  parallel_for(items, min_items, run ? 64 : 1, [&](size_t c, size_t begin, size_t end) {
    auto fold = [&](const uint8_t* p, size_t count) {
      bounds[c] = merge_exponent_bounds(
          bounds[c],
          HWY_DYNAMIC_DISPATCH(ExponentBoundsChunk)(p, static_cast<int>(src_type), count));
    };
    if (run) return fold(base + begin * bytes, end - begin);
    for (size_t r = begin; r < end; ++r) fold(base + r * ld * bytes, cols);
  });
  return exponent_range_of_bounds(bounds);
}

float cast_transpose(void* dst, void* dst_t, DType dst_type, const float* src, size_t rows,
                     size_t cols, float scale, bool saturate) {
  check_narrow(dst_type, "cast_transpose");
  FP8LM_CHECK(dst_t != nullptr, "cast_transpose needs a transposed destination");
  if (rows == 0 || cols == 0) return 0.0f;
  // Tiles of kTile x kTile: each row slice is cast with the SIMD kernel into a small
  // buffer that stays in L1, then scattered to both outputs.
  constexpr size_t kTile = 64;
  const size_t esize = dtype_size(dst_type);
  const size_t row_tiles = (rows + kTile - 1) / kTile;
  const size_t min_tiles = std::max<size_t>(1, kMinChunk / (kTile * cols));
  std::vector<uint32_t> partial(chunk_count(row_tiles, min_tiles), 0);
  auto* out = static_cast<uint8_t*>(dst);
  auto* out_t = static_cast<uint8_t*>(dst_t);
  parallel_for(row_tiles, min_tiles, 1, [&](size_t c, size_t tile_begin, size_t tile_end) {
    alignas(64) uint8_t tile[kTile * kTile * 2];
    uint32_t m = 0;
    for (size_t rt = tile_begin; rt < tile_end; ++rt) {
      const size_t r0 = rt * kTile;
      const size_t nr = std::min(kTile, rows - r0);
      for (size_t c0 = 0; c0 < cols; c0 += kTile) {
        const size_t nc = std::min(kTile, cols - c0);
        for (size_t r = 0; r < nr; ++r) {
          m = std::max(m, HWY_DYNAMIC_DISPATCH(QuantizeChunk)(
                              tile + r * kTile * esize, static_cast<int>(dst_type),
                              src + (r0 + r) * cols + c0, nc, scale, saturate));
          if (out != nullptr)
            std::memcpy(out + ((r0 + r) * cols + c0) * esize, tile + r * kTile * esize,
                        nc * esize);
        }
        for (size_t cc = 0; cc < nc; ++cc) {
          uint8_t* row_t = out_t + ((c0 + cc) * rows + r0) * esize;
          if (esize == 1) {
            for (size_t r = 0; r < nr; ++r) row_t[r] = tile[r * kTile + cc];
          } else {
            for (size_t r = 0; r < nr; ++r)
              std::memcpy(row_t + r * 2, tile + (r * kTile + cc) * 2, 2);
          }
        }
      }
    }
    partial[c] = m;
  });
  return amax_from_bits(*std::max_element(partial.begin(), partial.end()));
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
