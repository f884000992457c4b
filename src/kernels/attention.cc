// Causal self-attention, forward and backward, one (batch, head) pair per task.
//
// Each head runs over blocks of kQueryBlock query rows. A block's scores against every key
// it may see (keys 0 .. its last row) are one FP32 GEMM into a qb × n scratch, so every
// product of the layer runs in the GEMM's register-blocked micro-kernel:
//   forward   S = scale·Q_I·Kᵀ, P = softmax(S) (causal), O_I = P·V
//   backward  P = exp(S − lse), dP = dO_I·Vᵀ, dS = scale·P∘(dP − D), D_i = <dO_i, O_i>,
//             dQ_I = dS·K, dK += dSᵀ·Q_I, dV += Pᵀ·dO_I
// Only one block's scores exist at a time (2·qb·T floats per thread); the backward pass
// recomputes P from the saved log-sum-exp. Blocks run from the last (which sees every key,
// so its dK/dV products overwrite) to the first, accumulating into dK and dV.
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

// Rows [0, rows) of s (row r is query i0 + r, its first n = keys columns, stride ld): each
// row becomes its causal softmax (zero past the query's own key); lse[r] = its log-sum-exp.
void SoftmaxRows(float* s, size_t ld, size_t rows, size_t n, size_t i0, float* lse) {
  const DF df;
  for (size_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    const size_t valid = std::min(n, i0 + r + 1);
    auto vmax = hn::Set(df, -std::numeric_limits<float>::infinity());
    size_t j = 0;
    for (; j + kLanes <= valid; j += kLanes) vmax = hn::Max(vmax, hn::LoadU(df, row + j));
    float m = hn::GetLane(hn::MaxOfLanes(df, vmax));
    for (; j < valid; ++j) m = std::max(m, row[j]);
    const auto vm = hn::Set(df, m);
    Sums32 vsum(df);
    for (j = 0; j < valid; j += kLanes) {
      const size_t k = std::min(kLanes, valid - j);
      auto p = hwy::HWY_NAMESPACE::Exp(df, hn::Sub(LoadPart(df, row + j, k), vm));
      if (k < kLanes) p = hn::IfThenElseZero(hn::FirstN(df, k), p);
      vsum.at(j) = hn::Add(vsum.at(j), p);
      StorePart(df, p, row + j, k);
    }
    const float l = vsum.total();
    const auto inv_l = hn::Set(df, 1.0f / l);
    for (j = 0; j + kLanes <= valid; j += kLanes)
      hn::StoreU(hn::Mul(hn::LoadU(df, row + j), inv_l), df, row + j);
    for (; j < valid; ++j) row[j] *= 1.0f / l;
    std::fill(row + valid, row + n, 0.0f);
    lse[r] = m + std::log(l);
  }
}

// Given scores s and dP (same layout as SoftmaxRows), s ← P = exp(s − lse) and
// dp ← dS = scale·P∘(dP − D), both zero past each query's own key. D[r] = <dO_i, O_i>.
void SoftmaxGradRows(float* s, float* dp, size_t ld, size_t rows, size_t n, size_t i0,
                     const float* lse, const float* D, float scale) {
  const DF df;
  const auto vscale = hn::Set(df, scale);
  for (size_t r = 0; r < rows; ++r) {
    float* srow = s + r * ld;
    float* drow = dp + r * ld;
    const size_t valid = std::min(n, i0 + r + 1);
    const auto vlse = hn::Set(df, lse[r]), vd = hn::Set(df, D[r]);
    for (size_t j = 0; j < valid; j += kLanes) {
      const size_t k = std::min(kLanes, valid - j);
      auto p = hwy::HWY_NAMESPACE::Exp(df, hn::Sub(LoadPart(df, srow + j, k), vlse));
      if (k < kLanes) p = hn::IfThenElseZero(hn::FirstN(df, k), p);
      StorePart(df, p, srow + j, k);
      const auto ds = hn::Mul(hn::Mul(p, hn::Sub(LoadPart(df, drow + j, k), vd)), vscale);
      StorePart(df, ds, drow + j, k);
    }
    std::fill(srow + valid, srow + n, 0.0f);
    std::fill(drow + valid, drow + n, 0.0f);
  }
}

// D[r] = <a_r, b_r> over HS, rows at stride ld.
void RowDots(float* D, const float* a, const float* b, size_t ld, size_t rows, size_t HS) {
  const DF df;
  for (size_t r = 0; r < rows; ++r) {
    Sums32 s(df);
    for (size_t d = 0; d < HS; d += kLanes) {
      const size_t k = std::min(kLanes, HS - d);
      s.at(d) =
          hn::MulAdd(LoadPart(df, a + r * ld + d, k), LoadPart(df, b + r * ld + d, k), s.at(d));
    }
    D[r] = s.total();
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/check.h"
#include "core/memory.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"

namespace fp8lm {
HWY_EXPORT(SoftmaxRows);
HWY_EXPORT(SoftmaxGradRows);
HWY_EXPORT(RowDots);

namespace kernels {
namespace {

// Query rows per block: 64 rows of scores fit the L2 cache with their operands for T in the
// thousands, and the diagonal block's masked half (the only FLOPs spent on zeros) stays small.
constexpr size_t kQueryBlock = 64;

// One head's operands: rows at stride ld (q, k, v inside qkv: 3C; out, dout: C).
struct Head {
  const float *q, *k, *v;
  size_t ld;
  size_t T, HS;
  float scale;  // 1/sqrt(HS)
};

Head head_of(const float* qkv, size_t T, size_t C, size_t HS, size_t h) {
  const float* q = qkv + h * HS;
  return {q, q + C, q + 2 * C, 3 * C, T, HS, 1.0f / std::sqrt(static_cast<float>(HS))};
}

GemmOperand f32(const float* p, size_t ld, bool transposed = false) {
  return {p, DType::kF32, transposed, ld};
}

// s (rows × n, stride n) = scale · Q[i0, i0+rows) · K[0, n)ᵀ
void scores(const Head& h, size_t i0, size_t rows, size_t n, float* s) {
  gemm(rows, n, h.HS, h.scale, f32(h.q + i0 * h.ld, h.ld), f32(h.k, h.ld, true), 0.0f,
       {s, DType::kF32, n});
}

// Query rows [i0, i0 + rows) (rows ≤ kQueryBlock; q holds row i0 first, at stride ldq)
// against keys and values [0, i0 + rows) (stride ldkv): out rows (stride ld_out), lse[0, rows).
void forward_block(const float* q, size_t ldq, const float* k, const float* v, size_t ldkv,
                   size_t HS, float scale, size_t i0, size_t rows, float* out, size_t ld_out,
                   float* lse, float* s) {
  const size_t n = i0 + rows;
  gemm(rows, n, HS, scale, f32(q, ldq), f32(k, ldkv, true), 0.0f, {s, DType::kF32, n});
  HWY_DYNAMIC_DISPATCH(SoftmaxRows)(s, n, rows, n, i0, lse);
  gemm(rows, HS, n, 1.0f, f32(s, n), f32(v, ldkv), 0.0f, {out, DType::kF32, ld_out});
}

void forward_head(const Head& h, float* out, size_t ld_out, float* lse, float* s) {
  for (size_t i0 = 0; i0 < h.T; i0 += kQueryBlock)
    forward_block(h.q + i0 * h.ld, h.ld, h.k, h.v, h.ld, h.HS, h.scale, i0,
                  std::min(kQueryBlock, h.T - i0), out + i0 * ld_out, ld_out, lse + i0, s);
}

// dq, dk, dv rows (stride h.ld, inside dqkv) are overwritten.
void backward_head(const Head& h, const float* dout, const float* out, size_t ld_out,
                   const float* lse, float* dq, float* dk, float* dv, float* s) {
  float* dp = s + kQueryBlock * h.T;
  float D[kQueryBlock];
  const size_t blocks = (h.T + kQueryBlock - 1) / kQueryBlock;
  for (size_t b = blocks; b-- > 0;) {
    const size_t i0 = b * kQueryBlock, rows = std::min(kQueryBlock, h.T - i0), n = i0 + rows;
    const float beta = b + 1 == blocks ? 0.0f : 1.0f;  // the last block sees every key
    const float* doi = dout + i0 * ld_out;
    HWY_DYNAMIC_DISPATCH(RowDots)(D, doi, out + i0 * ld_out, ld_out, rows, h.HS);
    scores(h, i0, rows, n, s);
    gemm(rows, n, h.HS, 1.0f, f32(doi, ld_out), f32(h.v, h.ld, true), 0.0f, {dp, DType::kF32, n});
    HWY_DYNAMIC_DISPATCH(SoftmaxGradRows)(s, dp, n, rows, n, i0, lse + i0, D, h.scale);
    gemm(rows, h.HS, n, 1.0f, f32(dp, n), f32(h.k, h.ld), 0.0f, {dq + i0 * h.ld, DType::kF32, h.ld});
    gemm(n, h.HS, rows, 1.0f, f32(dp, n, true), f32(h.q + i0 * h.ld, h.ld), beta,
         {dk, DType::kF32, h.ld});
    gemm(n, h.HS, rows, 1.0f, f32(s, n, true), f32(doi, ld_out), beta, {dv, DType::kF32, h.ld});
  }
}

// Runs fn(b, h, scratch) for every (batch, head) pair over the threads, each thread with its
// own scratch of two query blocks' scores (the GEMMs inside run on the calling thread).
template <typename Fn>
void for_each_head(size_t B, size_t T, size_t C, size_t NH, Fn&& fn) {
  FP8LM_CHECK(NH > 0 && C % NH == 0, "attention: C = ", C, " not divisible by NH = ", NH);
  const int64_t tasks = static_cast<int64_t>(B * NH);
#pragma omp parallel
  {
    const Buffer scratch(2 * kQueryBlock * T * sizeof(float), MemCategory::kWorkspace);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task)
      fn(static_cast<size_t>(task) / NH, static_cast<size_t>(task) % NH,
         static_cast<float*>(scratch.data()));
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, size_t B, size_t T, size_t C,
                       size_t NH) {
  for_each_head(B, T, C, NH, [&](size_t b, size_t h, float* s) {
    forward_head(head_of(qkv + b * T * 3 * C, T, C, C / NH, h), out + b * T * C + h * (C / NH), C,
                 lse + (b * NH + h) * T, s);
  });
}

size_t attention_rows_scratch(size_t keys) { return kQueryBlock * keys; }

void attention_rows(float* out, size_t ld_out, const float* q, size_t ldq, const float* k,
                    const float* v, size_t ldkv, size_t HS, size_t i0, size_t rows,
                    float* scratch) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  float lse[kQueryBlock];
  for (size_t b = 0; b < rows; b += kQueryBlock)
    forward_block(q + b * ldq, ldq, k, v, ldkv, HS, scale, i0 + b, std::min(kQueryBlock, rows - b),
                  out + b * ld_out, ld_out, lse, scratch);
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, size_t B, size_t T, size_t C, size_t NH) {
  for_each_head(B, T, C, NH, [&](size_t b, size_t h, float* s) {
    const size_t HS = C / NH, off = b * T * C + h * HS;
    float* dq = dqkv + b * T * 3 * C + h * HS;
    backward_head(head_of(qkv + b * T * 3 * C, T, C, HS, h), dout + off, out + off, C,
                  lse + (b * NH + h) * T, dq, dq + C, dq + 2 * C, s);
  });
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
