// AdamW over narrow-format states: decode, update in FP32, (pass 1) amax or (pass 2) encode.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/adamw.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/vec-inl.h"
#include "kernels/adamw.h"
#include "kernels/codec-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
using DF = hn::ScalableTag<float>;
using DU = hn::RebindToUnsigned<DF>;
using DI = hn::RebindToSigned<DF>;
constexpr size_t kLanes = hn::MaxLanes(DF());

using Args = kernels::detail::AdamWKernelArgs;

template <int kType>
HWY_INLINE void StoreAs(DF df, hn::Vec<DF> v, uint8_t* p) {
  constexpr DType t = static_cast<DType>(kType);
  if constexpr (t == DType::kF32) {
    hn::StoreU(v, df, reinterpret_cast<float*>(p));
  } else {
    constexpr FloatFormat F = float_format(t);
    EncodeStore<F>(df, v, F.max_code, p);  // saturating
  }
}

// One pass over [0, n): kWrite = false accumulates amax bits of the new states into
// amax[3]; kWrite = true stores them scaled.
template <int kM, int kM1, int kM2, int kG, bool kWrite>
void AdamWT(uint8_t* master, uint8_t* m1, uint8_t* m2, const uint8_t* grad, size_t n,
            const Args& a, uint32_t* amax) {
  const DF df;
  const DU du;
  const DI di;
  constexpr size_t bM = dtype_size(static_cast<DType>(kM)), b1 = dtype_size(static_cast<DType>(kM1));
  constexpr size_t b2 = dtype_size(static_cast<DType>(kM2)), bG = dtype_size(static_cast<DType>(kG));
  const auto lr = hn::Set(df, a.lr), b1v = hn::Set(df, a.beta1), b2v = hn::Set(df, a.beta2);
  const auto one_b1 = hn::Set(df, 1.0f - a.beta1), one_b2 = hn::Set(df, 1.0f - a.beta2);
  const auto keep = hn::Set(df, 1.0f - a.decay), eps = hn::Set(df, a.eps);
  const auto inv_bc1 = hn::Set(df, 1.0f / a.bias_corr1), inv_bc2 = hn::Set(df, 1.0f / a.bias_corr2);
  const auto gmul = hn::Set(df, a.grad_inv * a.grad_mul);
  const auto mi = hn::Set(df, a.master_inv), m1i = hn::Set(df, a.m1_inv), m2i = hn::Set(df, a.m2_inv);
  const auto ms = hn::Set(df, a.master_scale), m1s = hn::Set(df, a.m1_scale), m2s = hn::Set(df, a.m2_scale);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  auto am0 = hn::Zero(di), am1 = hn::Zero(di), am2 = hn::Zero(di);
  auto absbits = [&](hn::Vec<DF> v) { return hn::BitCast(di, hn::And(hn::BitCast(du, v), abs_mask)); };

  auto body = [&](const uint8_t* pM, const uint8_t* p1, const uint8_t* p2, const uint8_t* pG,
                  uint8_t* oM, uint8_t* o1, uint8_t* o2) {
    const auto g = hn::Mul(LoadAsF32<kG>(df, pG), gmul);
    auto theta = hn::Mul(hn::Mul(LoadAsF32<kM>(df, pM), mi), keep);  // decoupled decay
    const auto m = hn::MulAdd(b1v, hn::Mul(LoadAsF32<kM1>(df, p1), m1i), hn::Mul(one_b1, g));
    const auto v = hn::MulAdd(b2v, hn::Mul(LoadAsF32<kM2>(df, p2), m2i), hn::Mul(one_b2, hn::Mul(g, g)));
    const auto denom = hn::Add(hn::Sqrt(hn::Mul(v, inv_bc2)), eps);
    theta = hn::NegMulAdd(lr, hn::Div(hn::Mul(m, inv_bc1), denom), theta);
    if constexpr (kWrite) {
      StoreAs<kM>(df, kM == static_cast<int>(DType::kF32) ? theta : hn::Mul(theta, ms), oM);
      StoreAs<kM1>(df, kM1 == static_cast<int>(DType::kF32) ? m : hn::Mul(m, m1s), o1);
      StoreAs<kM2>(df, kM2 == static_cast<int>(DType::kF32) ? v : hn::Mul(v, m2s), o2);
    } else {
      am0 = hn::Max(am0, absbits(theta));
      am1 = hn::Max(am1, absbits(m));
      am2 = hn::Max(am2, absbits(v));
    }
  };
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    body(master + i * bM, m1 + i * b1, m2 + i * b2, grad + i * bG, master + i * bM, m1 + i * b1,
         m2 + i * b2);
  if (i < n) {  // tail through buffers whose padding lanes repeat the last element: they add
                // nothing to the amaxes (zero states would make 0/0 where ε = 0) and are not stored
    const size_t k = n - i;
    HWY_ALIGN uint8_t bufM[HWY_MAX_BYTES], buf1[HWY_MAX_BYTES], buf2[HWY_MAX_BYTES],
        bufG[HWY_MAX_BYTES];
    auto fill = [&](uint8_t* buf, const uint8_t* src, size_t bytes) {
      std::memcpy(buf, src + i * bytes, k * bytes);
      for (size_t j = k; j < kLanes; ++j)
        std::memcpy(buf + j * bytes, src + (n - 1) * bytes, bytes);
    };
    fill(bufM, master, bM);
    fill(buf1, m1, b1);
    fill(buf2, m2, b2);
    fill(bufG, grad, bG);
    body(bufM, buf1, buf2, bufG, bufM, buf1, buf2);
    if constexpr (kWrite) {
      std::memcpy(master + i * bM, bufM, k * bM);
      std::memcpy(m1 + i * b1, buf1, k * b1);
      std::memcpy(m2 + i * b2, buf2, k * b2);
    }
  }
  if constexpr (!kWrite) {
    amax[0] = std::max(amax[0], static_cast<uint32_t>(hn::GetLane(hn::MaxOfLanes(di, am0))));
    amax[1] = std::max(amax[1], static_cast<uint32_t>(hn::GetLane(hn::MaxOfLanes(di, am1))));
    amax[2] = std::max(amax[2], static_cast<uint32_t>(hn::GetLane(hn::MaxOfLanes(di, am2))));
  }
}

constexpr int I(DType t) { return static_cast<int>(t); }

// The supported state-format combinations (master, m1, m2, gradient); false for others.
template <bool kWrite>
bool AdamWDispatch(uint8_t* master, int tm, uint8_t* m1, int t1, uint8_t* m2, int t2,
                   const uint8_t* grad, int tg, size_t n, const Args& a, uint32_t* amax) {
  const int f32 = I(DType::kF32), f16 = I(DType::kF16), e4 = I(DType::kE4M3);
#define FP8LM_ADAMW_CASE(M, A, B, G)                                                 \
  if (tm == I(DType::M) && t1 == I(DType::A) && t2 == I(DType::B) && tg == I(DType::G)) { \
    AdamWT<I(DType::M), I(DType::A), I(DType::B), I(DType::G), kWrite>(master, m1, m2, grad, n, \
                                                                       a, amax);           \
    return true;                                                                     \
  }
  (void)f32;
  (void)f16;
  (void)e4;
  FP8LM_ADAMW_CASE(kF32, kF32, kF32, kF32)    // all FP32
  FP8LM_ADAMW_CASE(kF16, kF32, kF32, kE4M3)   // FP16 master, FP32 moments, E4M3 gradient
  FP8LM_ADAMW_CASE(kF16, kF32, kF32, kF32)    // the same with an FP32 gradient
  FP8LM_ADAMW_CASE(kF16, kE4M3, kF16, kE4M3)  // FP16 master, E4M3 m1, FP16 m2, E4M3 gradient
  FP8LM_ADAMW_CASE(kF16, kE4M3, kF16, kF32)   // the same with an FP32 gradient
  // The precision-decoupling ablations (docs/experiments.md): BF16 master, E4M3 master,
  // E4M3 m2, each otherwise O2.
  FP8LM_ADAMW_CASE(kBF16, kE4M3, kF16, kE4M3)
  FP8LM_ADAMW_CASE(kE4M3, kE4M3, kF16, kE4M3)
  FP8LM_ADAMW_CASE(kF16, kE4M3, kE4M3, kE4M3)
#undef FP8LM_ADAMW_CASE
  return false;
}

bool AdamWAmaxChunk(uint8_t* master, int tm, uint8_t* m1, int t1, uint8_t* m2, int t2,
                    const uint8_t* grad, int tg, size_t n, const Args& a, uint32_t* amax) {
  return AdamWDispatch<false>(master, tm, m1, t1, m2, t2, grad, tg, n, a, amax);
}
bool AdamWApplyChunk(uint8_t* master, int tm, uint8_t* m1, int t1, uint8_t* m2, int t2,
                     const uint8_t* grad, int tg, size_t n, const Args& a) {
  return AdamWDispatch<true>(master, tm, m1, t1, m2, t2, grad, tg, n, a, nullptr);
}

// out[b] = the sum of squares of values [b·kSquaresBlock, (b+1)·kSquaresBlock) of n, in FP32.
template <int kType>
void SumSquaresT(const uint8_t* grad, size_t n, float* out) {
  const DF df;
  constexpr size_t kBytes = dtype_size(static_cast<DType>(kType));
  for (size_t i = 0; i < n; i += kernels::detail::kSquaresBlock) {
    const size_t k = std::min(kernels::detail::kSquaresBlock, n - i);
    Sums32 s(df);
    size_t j = 0;
    for (; j + kLanes <= k; j += kLanes) {
      const auto a = LoadAsF32<kType>(df, grad + (i + j) * kBytes);
      s.at(j) = hn::MulAdd(a, a, s.at(j));
    }
    if (j < k) {
      HWY_ALIGN uint8_t in[HWY_MAX_BYTES] = {};
      std::memcpy(in, grad + (i + j) * kBytes, (k - j) * kBytes);
      const auto a = LoadAsF32<kType>(df, in);
      s.at(j) = hn::MulAdd(a, a, s.at(j));
    }
    *out++ = s.total();
  }
}

void SumSquaresChunk(const uint8_t* grad, int type, size_t n, float* out) {
  switch (static_cast<DType>(type)) {
    case DType::kF32:
      return SumSquaresT<I(DType::kF32)>(grad, n, out);
    case DType::kF16:
      return SumSquaresT<I(DType::kF16)>(grad, n, out);
    case DType::kBF16:
      return SumSquaresT<I(DType::kBF16)>(grad, n, out);
    case DType::kE4M3:
      return SumSquaresT<I(DType::kE4M3)>(grad, n, out);
    default:
      return SumSquaresT<I(DType::kE5M2)>(grad, n, out);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/check.h"
#include "core/parallel.h"
#include "kernels/adamw.h"

namespace fp8lm {
HWY_EXPORT(AdamWAmaxChunk);
HWY_EXPORT(AdamWApplyChunk);
HWY_EXPORT(SumSquaresChunk);

namespace kernels {
namespace {

constexpr size_t kMinChunk = 1 << 15;

// Per-tensor views only: one scale per state and gradient.
float scale_of(const ScaledView& v, const char* what) {
  if (v.mode != ScalingMode::kTensor && v.mode != ScalingMode::kNone)
    fail("adamw: ", what, " is ", scaling_mode_name(v.mode), "-scaled; states and gradients are "
         "scaled per tensor");
  return v.tensor_scale();
}

detail::AdamWKernelArgs kernel_args(const ScaledView& master, const ScaledView& m1,
                                    const ScaledView& m2, const ScaledView& grad,
                                    const AdamWArgs& a, const AdamWScales& s) {
  FP8LM_CHECK(m1.numel() == master.numel() && m2.numel() == master.numel() &&
                  grad.numel() == master.numel(),
              "adamw: states of ", master.numel(), ", ", m1.numel(), ", ", m2.numel(),
              " elements and a gradient of ", grad.numel());
  return {a.lr,         a.beta1,
          a.beta2,      a.eps,
          a.decay,      a.bias_corr1,
          a.bias_corr2, a.grad_mul,
          scale_of(master, "master"), scale_of(m1, "m1"),
          scale_of(m2, "m2"), scale_of(grad, "the gradient"),
          s.master,     s.m1,
          s.m2};
}

template <typename Fn>
void for_chunks(size_t n, Fn&& fn) {
  parallel_for(n, kMinChunk, 64, std::forward<Fn>(fn));
}

[[noreturn]] void unsupported(const ScaledView& master, const ScaledView& m1,
                              const ScaledView& m2, const ScaledView& g) {
  fail("adamw: unsupported state formats master ", dtype_name(master.data.dtype), ", m1 ",
       dtype_name(m1.data.dtype), ", m2 ", dtype_name(m2.data.dtype), ", grad ",
       dtype_name(g.data.dtype));
}

}  // namespace

bool adamw_supported(DType master, DType m1, DType m2, DType grad) {
  // An empty pass: true when a kernel exists for the combination.
  uint32_t amax[3] = {};
  return HWY_DYNAMIC_DISPATCH(AdamWAmaxChunk)(nullptr, static_cast<int>(master), nullptr,
                                              static_cast<int>(m1), nullptr, static_cast<int>(m2),
                                              nullptr, static_cast<int>(grad), 0, {}, amax);
}

namespace {

// The four payloads at element lo, with their dtypes as the chunk kernels take them.
struct Chunk {
  uint8_t *master, *m1, *m2;
  const uint8_t* grad;
};
Chunk at(const ScaledView& master, const ScaledView& m1, const ScaledView& m2,
         const ScaledView& g, size_t lo) {
  auto p = [lo](const ScaledView& v) {
    return const_cast<uint8_t*>(static_cast<const uint8_t*>(v.data.data)) +
           lo * dtype_size(v.data.dtype);
  };
  return {p(master), p(m1), p(m2), p(g)};
}

}  // namespace

AdamWScales adamw_amax(const ScaledView& master, const ScaledView& m1, const ScaledView& m2,
                       const ScaledView& grad, const AdamWArgs& a) {
  const auto args = kernel_args(master, m1, m2, grad, a, {1, 1, 1});
  const size_t n = master.numel();
  const size_t chunks = chunk_count(n, kMinChunk);
  std::vector<uint32_t> amax(3 * chunks, 0);
  std::vector<char> ok(chunks, 1);
  for_chunks(n, [&](size_t c, size_t lo, size_t hi) {
    const Chunk k = at(master, m1, m2, grad, lo);  // read only in this pass
    ok[c] = HWY_DYNAMIC_DISPATCH(AdamWAmaxChunk)(
        k.master, static_cast<int>(master.data.dtype), k.m1, static_cast<int>(m1.data.dtype), k.m2,
        static_cast<int>(m2.data.dtype), k.grad, static_cast<int>(grad.data.dtype), hi - lo, args,
        amax.data() + 3 * c);
  });
  if (n > 0 && !ok[0]) unsupported(master, m1, m2, grad);
  uint32_t r[3] = {0, 0, 0};
  for (size_t c = 0; c < chunks; ++c)
    for (int k = 0; k < 3; ++k) r[k] = std::max(r[k], amax[3 * c + k]);
  return {std::bit_cast<float>(r[0]), std::bit_cast<float>(r[1]), std::bit_cast<float>(r[2])};
}

void adamw_apply(const MutableScaledView& master, const MutableScaledView& m1,
                 const MutableScaledView& m2, const ScaledView& grad, const AdamWArgs& a,
                 const AdamWScales& scale) {
  const auto args = kernel_args(master, m1, m2, grad, a, scale);
  const size_t n = master.numel();
  bool supported = true;
  for_chunks(n, [&](size_t c, size_t lo, size_t hi) {
    const Chunk k = at(master, m1, m2, grad, lo);
    const bool r = HWY_DYNAMIC_DISPATCH(AdamWApplyChunk)(
        k.master, static_cast<int>(master.data.dtype), k.m1, static_cast<int>(m1.data.dtype), k.m2,
        static_cast<int>(m2.data.dtype), k.grad, static_cast<int>(grad.data.dtype), hi - lo, args);
    if (c == 0) supported = r;
  });
  if (n > 0 && !supported) unsupported(master, m1, m2, grad);
}

double sum_squares(const ScaledView& grad) {
  const DType t = grad.data.dtype;
  FP8LM_CHECK(is_float(t), "sum_squares: not a floating dtype: ", dtype_name(t));
  const double s = scale_of(grad, "the gradient");
  const size_t n = grad.numel();
  // FP32 sums of fixed blocks, added in block order in double: the same bits on any number
  // of threads.
  constexpr size_t kBlock = detail::kSquaresBlock;
  std::vector<float> blocks((n + kBlock - 1) / kBlock);
  const size_t es = dtype_size(t);
  parallel_for(blocks.size(), kMinChunk / kBlock, 1, [&](size_t, size_t b0, size_t b1) {
    HWY_DYNAMIC_DISPATCH(SumSquaresChunk)(
        static_cast<const uint8_t*>(grad.data.data) + b0 * kBlock * es, static_cast<int>(t),
        std::min(n, b1 * kBlock) - b0 * kBlock, blocks.data() + b0);
  });
  double total = 0;
  for (float b : blocks) total += static_cast<double>(b);
  return total * s * s;
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
