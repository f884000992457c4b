// Narrow format (or f32) → float32 or bf16, times scale_inv.
#include <algorithm>
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/dequantize.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/codec-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {

template <int kSrc, bool kToBF16>
void DequantT(void* HWY_RESTRICT out, const void* HWY_RESTRICT in, size_t n, float scale_inv) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  constexpr size_t kInBytes = dtype_size(static_cast<DType>(kSrc));
  constexpr size_t kOutBytes = kToBF16 ? 2 : 4;
  const auto vs = hn::Set(df, scale_inv);
  const auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);

  auto store = [&](hn::Vec<decltype(df)> y, uint8_t* p) {
    if constexpr (kToBF16) {
      EncodeStore<kBF16Format>(df, y, kBF16Format.inf_code, p);
    } else {
      hn::StoreU(y, df, reinterpret_cast<float*>(p));
    }
  };
  size_t i = 0;
  for (; i + N <= n; i += N)
    store(hn::Mul(LoadAsF32<kSrc>(df, src + i * kInBytes), vs), dst + i * kOutBytes);
  if (i < n) {
    const size_t count = n - i;
    HWY_ALIGN uint8_t in_buf[HWY_MAX_BYTES] = {};
    HWY_ALIGN uint8_t out_buf[HWY_MAX_BYTES] = {};
    std::memcpy(in_buf, src + i * kInBytes, count * kInBytes);
    store(hn::Mul(LoadAsF32<kSrc>(df, in_buf), vs), out_buf);
    std::memcpy(dst + i * kOutBytes, out_buf, count * kOutBytes);
  }
}

template <bool kToBF16>
void DequantDispatch(void* out, const void* in, int src_type, size_t n, float scale_inv) {
  switch (static_cast<DType>(src_type)) {
    case DType::kF32:
      return DequantT<static_cast<int>(DType::kF32), kToBF16>(out, in, n, scale_inv);
    case DType::kF16:
      return DequantT<static_cast<int>(DType::kF16), kToBF16>(out, in, n, scale_inv);
    case DType::kBF16:
      return DequantT<static_cast<int>(DType::kBF16), kToBF16>(out, in, n, scale_inv);
    case DType::kE4M3:
      return DequantT<static_cast<int>(DType::kE4M3), kToBF16>(out, in, n, scale_inv);
    default:
      return DequantT<static_cast<int>(DType::kE5M2), kToBF16>(out, in, n, scale_inv);
  }
}

void DequantizeChunk(void* out, const void* in, int src_type, size_t n, float scale_inv) {
  DequantDispatch<false>(out, in, src_type, n, scale_inv);
}
void DequantizeBF16Chunk(void* out, const void* in, int src_type, size_t n, float scale_inv) {
  DequantDispatch<true>(out, in, src_type, n, scale_inv);
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/check.h"
#include "core/parallel.h"
#include "kernels/cast.h"

namespace fp8lm {
HWY_EXPORT(DequantizeChunk);
HWY_EXPORT(DequantizeBF16Chunk);

namespace kernels {
namespace {

constexpr size_t kMinChunk = 1 << 16;

void check_source(DType t) {
  FP8LM_CHECK(is_float(t), "dequantize: source must be a floating dtype, got ", dtype_name(t));
}

}  // namespace

void dequantize(float* dst, const void* src, DType src_type, size_t n, float scale_inv) {
  check_source(src_type);
  const size_t in_bytes = dtype_size(src_type);
  parallel_for(n, kMinChunk, 64, [&](size_t, size_t begin, size_t end) {
    HWY_DYNAMIC_DISPATCH(DequantizeChunk)(dst + begin,
                                          static_cast<const uint8_t*>(src) + begin * in_bytes,
                                          static_cast<int>(src_type), end - begin, scale_inv);
  });
}

void dequantize_to_bf16(uint16_t* dst, const void* src, DType src_type, size_t n,
                        float scale_inv) {
  check_source(src_type);
  const size_t in_bytes = dtype_size(src_type);
  parallel_for(n, kMinChunk, 64, [&](size_t, size_t begin, size_t end) {
    HWY_DYNAMIC_DISPATCH(DequantizeBF16Chunk)(dst + begin,
                                              static_cast<const uint8_t*>(src) + begin * in_bytes,
                                              static_cast<int>(src_type), end - begin,
                                              scale_inv);
  });
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
