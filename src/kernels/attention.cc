// Causal self-attention, forward and backward, one (batch, head) pair per task.
//
// Scores of one query row against a tile of keys are computed with the keys transposed
// (K^T [HS, T]) so that each FMA covers `lanes` keys at once; the softmax is online over
// key tiles (running max and sum, accumulator rescaled per tile), so only one tile of
// scores per query row ever exists. The backward pass recomputes the probabilities from
// the saved log-sum-exp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/vec-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
using DF = hn::ScalableTag<float>;
constexpr size_t kLanes = hn::MaxLanes(DF());
constexpr size_t kTile = 64;  // keys per online-softmax step (a multiple of every lane count)

struct Head {
  const float* q;  // row t at q + t * ld (HS floats); k, v likewise
  const float* k;
  const float* v;
  size_t ld;  // 3C
  size_t T, HS;
  float scale;  // 1/sqrt(HS)
};

// dst[d * tpad + t] = src[t * ld + d]
void TransposeInto(float* dst, const float* src, size_t ld, size_t T, size_t HS, size_t tpad) {
  for (size_t t = 0; t < T; ++t)
    for (size_t d = 0; d < HS; ++d) dst[d * tpad + t] = src[t * ld + d];
  for (size_t d = 0; d < HS; ++d) std::fill(dst + d * tpad + T, dst + (d + 1) * tpad, 0.0f);
}

// s[j] = scale · <row, xt[:, j0 + j]> for j < jn (rounded up to whole vectors). Every vector
// of the tile has its own accumulator, so the FMAs are independent rather than one chain.
HWY_INLINE void RowTimesTile(float* s, const float* row, const float* xt, size_t tpad, size_t j0,
                             size_t jn, size_t HS, float scale) {
  const DF df;
  constexpr size_t kVecs = kTile / kLanes;
  const size_t nv = (jn + kLanes - 1) / kLanes;
  hn::Vec<DF> acc[kVecs];
  HWY_UNROLL(kVecs)
  for (size_t v = 0; v < kVecs; ++v) acc[v] = hn::Zero(df);
  const float* x = xt + j0;
  for (size_t d = 0; d < HS; ++d, x += tpad) {
    const auto r = hn::Set(df, row[d]);
    HWY_UNROLL(kVecs)
    for (size_t v = 0; v < kVecs; ++v)
      if (v < nv) acc[v] = hn::MulAdd(r, hn::LoadU(df, x + v * kLanes), acc[v]);
  }
  const auto vs = hn::Set(df, scale);
  for (size_t v = 0; v < nv; ++v) hn::Store(hn::Mul(acc[v], vs), df, s + v * kLanes);
}

// acc[0..HS) += a · x[0..HS)
HWY_INLINE void Axpy(float* acc, float a, const float* x, size_t HS) {
  const DF df;
  const auto va = hn::Set(df, a);
  for (size_t d = 0; d < HS; d += kLanes) {
    const size_t n = std::min(kLanes, HS - d);
    StorePart(df, hn::MulAdd(va, LoadPart(df, x + d, n), LoadPart(df, acc + d, n)), acc + d, n);
  }
}

// acc[0..HS) += Σ_{j < n} w[j] · x[j·ld .. j·ld + HS), summed in j order (as n Axpy calls),
// with four vectors of acc held in registers across the rows.
HWY_INLINE void AccumulateRows(float* acc, const float* w, const float* x, size_t ld, size_t n,
                               size_t HS) {
  const DF df;
  size_t d = 0;
  for (; d + 4 * kLanes <= HS; d += 4 * kLanes) {
    auto a0 = hn::LoadU(df, acc + d), a1 = hn::LoadU(df, acc + d + kLanes);
    auto a2 = hn::LoadU(df, acc + d + 2 * kLanes), a3 = hn::LoadU(df, acc + d + 3 * kLanes);
    const float* xr = x + d;
    for (size_t j = 0; j < n; ++j, xr += ld) {
      const auto wj = hn::Set(df, w[j]);
      a0 = hn::MulAdd(wj, hn::LoadU(df, xr), a0);
      a1 = hn::MulAdd(wj, hn::LoadU(df, xr + kLanes), a1);
      a2 = hn::MulAdd(wj, hn::LoadU(df, xr + 2 * kLanes), a2);
      a3 = hn::MulAdd(wj, hn::LoadU(df, xr + 3 * kLanes), a3);
    }
    hn::StoreU(a0, df, acc + d);
    hn::StoreU(a1, df, acc + d + kLanes);
    hn::StoreU(a2, df, acc + d + 2 * kLanes);
    hn::StoreU(a3, df, acc + d + 3 * kLanes);
  }
  if (d < HS)
    for (size_t j = 0; j < n; ++j) Axpy(acc + d, w[j], x + j * ld + d, HS - d);
}

HWY_INLINE float Dot(const float* a, const float* b, size_t HS) {
  const DF df;
  auto s = hn::Zero(df);
  for (size_t d = 0; d < HS; d += kLanes) {
    const size_t n = std::min(kLanes, HS - d);
    s = hn::MulAdd(LoadPart(df, a + d, n), LoadPart(df, b + d, n), s);
  }
  return hn::GetLane(hn::SumOfLanes(df, s));
}

// out rows (stride ld_out), lse [T]. scratch: HS·tpad + kTile + HS floats.
void ForwardHead(const Head& h, float* out, size_t ld_out, float* lse, float* scratch) {
  const DF df;
  const size_t tpad = (h.T + kTile - 1) / kTile * kTile;
  float* kt = scratch;
  float* s = kt + h.HS * tpad;
  float* acc = s + kTile;
  TransposeInto(kt, h.k, h.ld, h.T, h.HS, tpad);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < h.T; ++i) {
    const float* qi = h.q + i * h.ld;
    float m = neg_inf, l = 0.0f;
    std::fill(acc, acc + h.HS, 0.0f);
    for (size_t j0 = 0; j0 <= i; j0 += kTile) {
      const size_t jn = std::min(kTile, i + 1 - j0);  // causal: keys j0 .. i
      RowTimesTile(s, qi, kt, tpad, j0, jn, h.HS, h.scale);
      float tmax = neg_inf;
      for (size_t j = 0; j < jn; ++j) tmax = std::max(tmax, s[j]);
      const float m_new = std::max(m, tmax);
      const float corr = std::exp(m - m_new);  // 0 on the first tile
      l *= corr;
      if (corr != 1.0f) {
        for (size_t d = 0; d < h.HS; ++d) acc[d] *= corr;
      }
      const auto vm = hn::Set(df, m_new);
      auto vl = hn::Zero(df);
      for (size_t j = 0; j < jn; j += kLanes) {
        auto p = hwy::HWY_NAMESPACE::Exp(df, hn::Sub(hn::Load(df, s + j), vm));
        if (jn - j < kLanes) p = hn::IfThenElseZero(hn::FirstN(df, jn - j), p);
        vl = hn::Add(vl, p);
        hn::Store(p, df, s + j);
      }
      l += hn::GetLane(hn::SumOfLanes(df, vl));
      AccumulateRows(acc, s, h.v + j0 * h.ld, h.ld, jn, h.HS);
      m = m_new;
    }
    const float inv_l = 1.0f / l;
    float* oi = out + i * ld_out;
    for (size_t d = 0; d < h.HS; ++d) oi[d] = acc[d] * inv_l;
    lse[i] = m + std::log(l);
  }
}

// dq, dk, dv rows (stride ld_d) are overwritten. scratch: 2·HS·tpad + 2·kTile + HS floats.
void BackwardHead(const Head& h, const float* dout, const float* out, size_t ld_out,
                  const float* lse, float* dq, float* dk, float* dv, size_t ld_d, float* scratch) {
  const DF df;
  const size_t tpad = (h.T + kTile - 1) / kTile * kTile;
  float* kt = scratch;
  float* vt = kt + h.HS * tpad;
  float* p = vt + h.HS * tpad;
  float* ds = p + kTile;
  float* dqi = ds + kTile;
  TransposeInto(kt, h.k, h.ld, h.T, h.HS, tpad);
  TransposeInto(vt, h.v, h.ld, h.T, h.HS, tpad);
  for (size_t t = 0; t < h.T; ++t) {
    std::fill(dk + t * ld_d, dk + t * ld_d + h.HS, 0.0f);
    std::fill(dv + t * ld_d, dv + t * ld_d + h.HS, 0.0f);
  }
  for (size_t i = 0; i < h.T; ++i) {
    const float* qi = h.q + i * h.ld;
    const float* doi = dout + i * ld_out;
    const float di = Dot(doi, out + i * ld_out, h.HS);  // D_i = <dO_i, O_i>
    const auto vlse = hn::Set(df, lse[i]), vdi = hn::Set(df, di);
    std::fill(dqi, dqi + h.HS, 0.0f);
    for (size_t j0 = 0; j0 <= i; j0 += kTile) {
      const size_t jn = std::min(kTile, i + 1 - j0);
      RowTimesTile(p, qi, kt, tpad, j0, jn, h.HS, h.scale);   // scores
      RowTimesTile(ds, doi, vt, tpad, j0, jn, h.HS, 1.0f);    // dP = dO · V^T
      for (size_t j = 0; j < jn; j += kLanes) {
        auto pj = hwy::HWY_NAMESPACE::Exp(df, hn::Sub(hn::Load(df, p + j), vlse));
        if (jn - j < kLanes) pj = hn::IfThenElseZero(hn::FirstN(df, jn - j), pj);
        hn::Store(pj, df, p + j);
        // dS = P ∘ (dP − D), times the score scale for dq and dk.
        hn::Store(hn::Mul(hn::Mul(pj, hn::Sub(hn::Load(df, ds + j), vdi)), hn::Set(df, h.scale)),
                  df, ds + j);
      }
      AccumulateRows(dqi, ds, h.k + j0 * h.ld, h.ld, jn, h.HS);
      for (size_t j = 0; j < jn; ++j) {
        const size_t t = j0 + j;
        Axpy(dk + t * ld_d, ds[j], qi, h.HS);
        Axpy(dv + t * ld_d, p[j], doi, h.HS);
      }
    }
    std::memcpy(dq + i * ld_d, dqi, h.HS * sizeof(float));
  }
}

void AttentionForwardHead(float* out, float* lse, const float* qkv, size_t T, size_t C,
                          size_t HS, size_t head, float* scratch) {
  const size_t ld = 3 * C, off = head * HS;
  const Head h{qkv + off, qkv + C + off, qkv + 2 * C + off, ld, T, HS,
               1.0f / std::sqrt(static_cast<float>(HS))};
  ForwardHead(h, out + off, C, lse, scratch);
}

void AttentionBackwardHead(float* dqkv, const float* dout, const float* qkv, const float* out,
                           const float* lse, size_t T, size_t C, size_t HS, size_t head,
                           float* scratch) {
  const size_t ld = 3 * C, off = head * HS;
  const Head h{qkv + off, qkv + C + off, qkv + 2 * C + off, ld, T, HS,
               1.0f / std::sqrt(static_cast<float>(HS))};
  BackwardHead(h, dout + off, out + off, C, lse, dqkv + off, dqkv + C + off, dqkv + 2 * C + off,
               ld, scratch);
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/check.h"
#include "core/memory.h"
#include "kernels/nn.h"

namespace fp8lm {
HWY_EXPORT(AttentionForwardHead);
HWY_EXPORT(AttentionBackwardHead);

namespace kernels {
namespace {

constexpr size_t kTilePad = 64;  // matches kTile above

size_t scratch_floats(size_t T, size_t HS) {
  const size_t tpad = (T + kTilePad - 1) / kTilePad * kTilePad;
  return 2 * HS * tpad + 2 * kTilePad + (HS + kTilePad - 1) / kTilePad * kTilePad;
}

}  // namespace

// Runs fn(b, h, scratch) for every (batch, head) pair over the threads, each thread with
// its own 64-byte aligned scratch (every sub-buffer starts at a multiple of 64 floats).
template <typename Fn>
void for_each_head(size_t B, size_t T, size_t C, size_t NH, Fn&& fn) {
  FP8LM_CHECK(NH > 0 && C % NH == 0, "attention: C = ", C, " not divisible by NH = ", NH);
  const int64_t tasks = static_cast<int64_t>(B * NH);
#pragma omp parallel
  {
    const Buffer scratch(scratch_floats(T, C / NH) * sizeof(float), MemCategory::kWorkspace);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task)
      fn(static_cast<size_t>(task) / NH, static_cast<size_t>(task) % NH,
         static_cast<float*>(scratch.data()));
  }
}

void attention_forward(float* out, float* lse, const float* qkv, size_t B, size_t T, size_t C,
                       size_t NH) {
  for_each_head(B, T, C, NH, [&](size_t b, size_t h, float* scratch) {
    HWY_DYNAMIC_DISPATCH(AttentionForwardHead)(out + b * T * C, lse + (b * NH + h) * T,
                                               qkv + b * T * 3 * C, T, C, C / NH, h, scratch);
  });
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, size_t B, size_t T, size_t C, size_t NH) {
  for_each_head(B, T, C, NH, [&](size_t b, size_t h, float* scratch) {
    HWY_DYNAMIC_DISPATCH(AttentionBackwardHead)(dqkv + b * T * 3 * C, dout + b * T * C,
                                                qkv + b * T * 3 * C, out + b * T * C,
                                                lse + (b * NH + h) * T, T, C, C / NH, h, scratch);
  });
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
