// Residual add, GELU forward/backward (x in f32 or bf16) and column sums (bias gradients).
#include <algorithm>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/elementwise.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/codec-inl.h"
#include "numerics/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
constexpr size_t kLanes = hn::MaxLanes(DF());

constexpr int kF32 = static_cast<int>(DType::kF32), kBF16 = static_cast<int>(DType::kBF16);

// out[i] = fn(x[i], b[i]) with x stored as kX (f32, or bf16 decoded on the fly), b and out
// f32 (b may be null: fn gets zeros; out may be x or b); the tail through padded buffers.
template <int kX, class Fn>
HWY_INLINE void MapX(float* out, const void* x, const float* b, size_t n, Fn fn) {
  const DF df;
  constexpr size_t kBytes = dtype_size(static_cast<DType>(kX));
  const auto* px = static_cast<const uint8_t*>(x);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    hn::StoreU(fn(LoadAsF32<kX>(df, px + i * kBytes), b ? hn::LoadU(df, b + i) : hn::Zero(df)),
               df, out + i);
  if (i < n) {
    HWY_ALIGN uint8_t bx[kLanes * sizeof(float)] = {};
    HWY_ALIGN float bb[kLanes] = {}, bo[kLanes];
    std::memcpy(bx, px + i * kBytes, (n - i) * kBytes);
    if (b) std::memcpy(bb, b + i, (n - i) * sizeof(float));
    hn::Store(fn(LoadAsF32<kX>(df, bx), hn::Load(df, bb)), df, bo);
    std::memcpy(out + i, bo, (n - i) * sizeof(float));
  }
}

void AddChunk(float* out, const float* a, const float* b, size_t n) {
  MapX<kF32>(out, a, b, n, [](auto x, auto y) { return hn::Add(x, y); });
}

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

template <int kX>
void GeluForwardT(float* out, const void* x, size_t n) {
  const DF df;
  MapX<kX>(out, x, nullptr, n, [&](auto v, auto) {
    const auto u = hn::Mul(hn::Set(df, kSqrt2OverPi),
                           hn::MulAdd(hn::Mul(hn::Set(df, kCubic), hn::Mul(v, v)), v, v));
    const auto half_x = hn::Mul(hn::Set(df, 0.5f), v);
    return hn::MulAdd(half_x, hwy::HWY_NAMESPACE::Tanh(df, u), half_x);
  });
}

// gelu'(x) = 0.5·(1 + t) + 0.5·x·(1 − t²)·sqrt(2/π)·(1 + 3·0.044715·x²), t = tanh(u).
template <int kX>
void GeluBackwardT(float* dx, const void* x, const float* dout, size_t n) {
  const DF df;
  MapX<kX>(dx, x, dout, n, [&](auto v, auto g) {
    const auto x2 = hn::Mul(v, v);
    const auto u = hn::Mul(hn::Set(df, kSqrt2OverPi), hn::MulAdd(hn::Mul(hn::Set(df, kCubic), x2), v, v));
    const auto t = hwy::HWY_NAMESPACE::Tanh(df, u);
    const auto half = hn::Set(df, 0.5f), one = hn::Set(df, 1.0f);
    const auto du = hn::Mul(hn::Set(df, kSqrt2OverPi), hn::MulAdd(hn::Set(df, 3 * kCubic), x2, one));
    const auto sech2 = hn::NegMulAdd(t, t, one);
    const auto d = hn::MulAdd(hn::Mul(half, v), hn::Mul(sech2, du), hn::Mul(half, hn::Add(one, t)));
    return hn::Mul(d, g);
  });
}

// GELU of x (f32, or bf16 when bf16) into out; with dout, out = dout · gelu'(x) instead.
void GeluChunk(float* out, const void* x, bool bf16, const float* dout, size_t n) {
  if (dout != nullptr) {
    bf16 ? GeluBackwardT<kBF16>(out, x, dout, n) : GeluBackwardT<kF32>(out, x, dout, n);
  } else {
    bf16 ? GeluForwardT<kBF16>(out, x, n) : GeluForwardT<kF32>(out, x, n);
  }
}

// out[c] = Σ_{r in rows} x[r, c] (overwrites out).
void ColumnSumChunk(float* out, const float* x, size_t rows, size_t cols) {
  std::fill(out, out + cols, 0.0f);
  for (size_t r = 0; r < rows; ++r) AddChunk(out, out, x + r * cols, cols);
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/parallel.h"
#include "kernels/nn.h"

namespace fp8lm {
HWY_EXPORT(AddChunk);
HWY_EXPORT(GeluChunk);
HWY_EXPORT(ColumnSumChunk);

namespace kernels {
namespace {
constexpr size_t kMinChunk = 1 << 15;
}  // namespace

void add(float* out, const float* a, const float* b, size_t n) {
  parallel_for(n, kMinChunk, 16, [&](size_t, size_t lo, size_t hi) {
    HWY_DYNAMIC_DISPATCH(AddChunk)(out + lo, a + lo, b + lo, hi - lo);
  });
}

namespace {
// GELU (dout null) or its gradient over n values of x (4- or 2-byte elements), in chunks.
void gelu(float* out, const void* x, bool bf16, const float* dout, size_t n) {
  const size_t bytes = bf16 ? 2 : 4;
  parallel_for(n, kMinChunk / 4, 16, [&](size_t, size_t lo, size_t hi) {
    HWY_DYNAMIC_DISPATCH(GeluChunk)(out + lo, static_cast<const uint8_t*>(x) + lo * bytes, bf16,
                                    dout != nullptr ? dout + lo : nullptr, hi - lo);
  });
}

}  // namespace

void gelu_forward(float* out, const float* x, size_t n) { gelu(out, x, false, nullptr, n); }
void gelu_forward_bf16(float* out, const uint16_t* x, size_t n) { gelu(out, x, true, nullptr, n); }
void gelu_backward(float* dx, const float* x, const float* dout, size_t n) {
  gelu(dx, x, false, dout, n);
}
void gelu_backward_bf16(float* dx, const uint16_t* x, const float* dout, size_t n) {
  gelu(dx, x, true, dout, n);
}

void column_sum(float* out, const float* x, size_t rows, size_t cols) {
  // Fixed blocks of rows, then the blocks in order: the same bits on any number of threads.
  const size_t block = std::max<size_t>(1, kMinChunk / std::max<size_t>(cols, 1));
  const size_t chunks = (rows + block - 1) / block;
  std::vector<float> partial(chunks * cols);
  for_fixed_blocks(rows, block, [&](size_t c, size_t r0, size_t r1) {
    HWY_DYNAMIC_DISPATCH(ColumnSumChunk)(partial.data() + c * cols, x + r0 * cols, r1 - r0, cols);
  });
  for (size_t c = 0; c < chunks; ++c)
    HWY_DYNAMIC_DISPATCH(AddChunk)(out, out, partial.data() + c * cols, cols);
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
