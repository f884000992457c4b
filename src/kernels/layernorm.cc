// LayerNorm forward and backward over rows of C channels.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/layernorm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/vec-inl.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
constexpr size_t kLanes = hn::MaxLanes(DF());
constexpr float kEps = 1e-5f;

void LayerNormForwardRows(float* out, float* mean, float* rstd, const float* x, const float* w,
                          const float* b, size_t rows, size_t C) {
  const DF df;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    Sums32 s(df);
    for (size_t c = 0; c < C; c += kLanes) s.at(c) = hn::Add(s.at(c), LoadPart(df, xr + c, C - c));
    const float m = s.total() / static_cast<float>(C);
    const auto vm = hn::Set(df, m);
    Sums32 v(df);
    for (size_t c = 0; c < C; c += kLanes) {
      // Padded lanes would contribute m²: mask them by subtracting from the loaded zeros.
      const size_t n = std::min(kLanes, C - c);
      auto d = hn::Sub(LoadPart(df, xr + c, n), vm);
      if (n < kLanes) d = hn::IfThenElseZero(hn::FirstN(df, n), d);
      v.at(c) = hn::MulAdd(d, d, v.at(c));
    }
    const float var = v.total() / static_cast<float>(C);
    const float rs = 1.0f / std::sqrt(var + kEps);
    const auto vrs = hn::Set(df, rs);
    for (size_t c = 0; c < C; c += kLanes) {
      const size_t n = std::min(kLanes, C - c);
      const auto norm = hn::Mul(hn::Sub(LoadPart(df, xr + c, n), vm), vrs);
      StorePart(df, hn::MulAdd(norm, LoadPart(df, w + c, n), LoadPart(df, b + c, n)), out + r * C + c, n);
    }
    mean[r] = m;
    rstd[r] = rs;
  }
}

// dx += ...; dw, db (this chunk's partial sums) += ...
void LayerNormBackwardRows(float* dx, float* dw, float* db, const float* dout, const float* x,
                           const float* mean, const float* rstd, const float* w, size_t rows,
                           size_t C) {
  const DF df;
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    const float* gr = dout + r * C;
    const auto vm = hn::Set(df, mean[r]), vrs = hn::Set(df, rstd[r]);
    // Two means over the row: of dnorm = dout·w and of dnorm·norm.
    Sums32 s1(df), s2(df);
    for (size_t c = 0; c < C; c += kLanes) {
      const size_t n = std::min(kLanes, C - c);
      const auto norm = hn::Mul(hn::Sub(LoadPart(df, xr + c, n), vm), vrs);
      const auto dnorm = hn::Mul(LoadPart(df, gr + c, n), LoadPart(df, w + c, n));
      s1.at(c) = hn::Add(s1.at(c), dnorm);
      s2.at(c) = hn::MulAdd(dnorm, norm, s2.at(c));  // padded lanes: dnorm = 0
    }
    const float inv_c = 1.0f / static_cast<float>(C);
    const auto mean_d = hn::Set(df, s1.total() * inv_c);
    const auto mean_dn = hn::Set(df, s2.total() * inv_c);
    for (size_t c = 0; c < C; c += kLanes) {
      const size_t n = std::min(kLanes, C - c);
      const auto g = LoadPart(df, gr + c, n);
      const auto norm = hn::Mul(hn::Sub(LoadPart(df, xr + c, n), vm), vrs);
      const auto dnorm = hn::Mul(g, LoadPart(df, w + c, n));
      StorePart(df, hn::MulAdd(g, norm, LoadPart(df, dw + c, n)), dw + c, n);
      StorePart(df, hn::Add(g, LoadPart(df, db + c, n)), db + c, n);
      const auto d = hn::Mul(hn::Sub(hn::Sub(dnorm, mean_d), hn::Mul(norm, mean_dn)), vrs);
      StorePart(df, hn::Add(LoadPart(df, dx + r * C + c, n), d), dx + r * C + c, n);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "core/parallel.h"
#include "kernels/nn.h"

namespace fp8lm {
HWY_EXPORT(LayerNormForwardRows);
HWY_EXPORT(LayerNormBackwardRows);

namespace kernels {

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, size_t rows, size_t C) {
  const size_t min_rows = std::max<size_t>(1, (1 << 14) / std::max<size_t>(C, 1));
  parallel_for(rows, min_rows, 1, [&](size_t, size_t r0, size_t r1) {
    HWY_DYNAMIC_DISPATCH(LayerNormForwardRows)(out + r0 * C, mean + r0, rstd + r0, x + r0 * C,
                                               w, b, r1 - r0, C);
  });
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* w, size_t rows,
                        size_t C) {
  // dw and db are summed over fixed blocks of rows, then the blocks in order: the same bits on
  // any number of threads.
  const size_t block = std::max<size_t>(1, (1 << 14) / std::max<size_t>(C, 1));
  const size_t chunks = (rows + block - 1) / block;
  std::vector<float> partial(chunks * 2 * C, 0.0f);  // per block: dw | db
  for_fixed_blocks(rows, block, [&](size_t c, size_t r0, size_t r1) {
    float* pw = partial.data() + c * 2 * C;
    HWY_DYNAMIC_DISPATCH(LayerNormBackwardRows)(dx + r0 * C, pw, pw + C, dout + r0 * C,
                                                x + r0 * C, mean + r0, rstd + r0, w, r1 - r0, C);
  });
  for (size_t c = 0; c < chunks; ++c) {
    const float* pw = partial.data() + c * 2 * C;
    for (size_t i = 0; i < C; ++i) {
      dw[i] += pw[i];
      db[i] += pw[C + i];
    }
  }
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
