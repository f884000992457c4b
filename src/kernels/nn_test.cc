// The FP32 transformer kernels against the FP64 reference ops, on every SIMD target.
#include "kernels/nn.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/simd.h"
#include "kernels/simd_test_util.h"
#include "model/ref_ops.h"

namespace fp8lm {
namespace {

std::vector<float> randf(size_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}
ref::Vec to_d(const std::vector<float>& v) { return ref::Vec(v.begin(), v.end()); }

// max |got − want| / (max |want| + floor) over all elements.
double rel_err(const std::vector<float>& got, const ref::Vec& want, double floor = 1e-6) {
  double scale = floor, err = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) err = std::max(err, std::fabs(got[i] - want[i]));
  return err / scale;
}

class NnOnTarget : public OnEveryTarget {};

TEST_P(NnOnTarget, AddGeluColumnSum) {
  std::mt19937 rng(1);
  const size_t n = 1000 * 37 + 3;
  const auto a = randf(n, rng, 3.0f), b = randf(n, rng);
  std::vector<float> out(n), dx(n);
  kernels::add(out.data(), a.data(), b.data(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], a[i] + b[i]);
  kernels::gelu_forward(out.data(), a.data(), n);
  kernels::gelu_backward(dx.data(), a.data(), b.data(), n);
  ref::Vec want(n), dwant(n);
  for (size_t i = 0; i < n; ++i) {
    want[i] = ref::gelu(a[i]);
    dwant[i] = ref::gelu_grad(a[i]) * b[i];
  }
  EXPECT_LT(rel_err(out, want), 1e-6);
  EXPECT_LT(rel_err(dx, dwant), 1e-6);
  // From BF16 bits (top halves of FP32 words, exact in FP32): the FP32 kernels' bits on the
  // decoded values, the tail included (n is not a multiple of any vector width).
  std::vector<uint16_t> h(n);
  std::vector<float> wide(n), out16(n), dx16(n);
  for (size_t i = 0; i < n; ++i) {
    h[i] = static_cast<uint16_t>(std::bit_cast<uint32_t>(a[i]) >> 16);
    wide[i] = std::bit_cast<float>(static_cast<uint32_t>(h[i]) << 16);
  }
  kernels::gelu_forward(out.data(), wide.data(), n);
  kernels::gelu_backward(dx.data(), wide.data(), b.data(), n);
  std::fill(out16.begin(), out16.end(), std::nanf(""));  // poisoned
  std::fill(dx16.begin(), dx16.end(), std::nanf(""));
  kernels::gelu_forward_bf16(out16.data(), h.data(), n);
  kernels::gelu_backward_bf16(dx16.data(), h.data(), b.data(), n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(out16[i]), std::bit_cast<uint32_t>(out[i])) << i;
    ASSERT_EQ(std::bit_cast<uint32_t>(dx16[i]), std::bit_cast<uint32_t>(dx[i])) << i;
  }
  const size_t rows = 333, cols = 77;
  const auto x = randf(rows * cols, rng);
  std::vector<float> cs(cols, 1.0f);
  kernels::column_sum(cs.data(), x.data(), rows, cols);
  ref::Vec cwant(cols, 1.0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) cwant[c] += x[r * cols + c];
  EXPECT_LT(rel_err(cs, cwant), 1e-5);
}

TEST_P(NnOnTarget, LayerNormForwardBackward) {
  std::mt19937 rng(2);
  for (size_t C : {size_t{7}, size_t{64}, size_t{100}}) {
    const size_t R = 45;
    const auto x = randf(R * C, rng, 2.0f), w = randf(C, rng), b = randf(C, rng),
               g = randf(R * C, rng);
    std::vector<float> y(R * C), mean(R), rstd(R);
    kernels::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(),
                               R, C);
    ref::Vec yw;
    ref::layernorm_fwd(yw, to_d(x), to_d(w), to_d(b), R, C);
    EXPECT_LT(rel_err(y, yw), 2e-6) << C;
    std::vector<float> dx(R * C, 0.5f), dw(C, 0.25f), db(C, -1.0f);
    kernels::layernorm_backward(dx.data(), dw.data(), db.data(), g.data(), x.data(), mean.data(),
                                rstd.data(), w.data(), R, C);
    ref::Vec dxw(R * C, 0.5), dww(C, 0.25), dbw(C, -1.0);
    ref::layernorm_bwd(dxw, dww, dbw, to_d(g), to_d(x), to_d(w), R, C);
    EXPECT_LT(rel_err(dx, dxw), 1e-5) << C;
    EXPECT_LT(rel_err(dw, dww), 1e-5) << C;
    EXPECT_LT(rel_err(db, dbw), 1e-5) << C;
  }
}

TEST_P(NnOnTarget, AttentionForwardBackward) {
  std::mt19937 rng(3);
  struct Case {
    size_t B, T, C, NH;
  };
  // T > 64 spans several online-softmax tiles; HS = 8 and 24 are not whole vectors.
  for (const Case& c : {Case{2, 5, 24, 3}, Case{1, 130, 64, 1}, Case{2, 70, 48, 2},
                        Case{1, 64, 128, 2}}) {
    const auto qkv = randf(c.B * c.T * 3 * c.C, rng, 1.5f), g = randf(c.B * c.T * c.C, rng);
    std::vector<float> out(c.B * c.T * c.C), lse(c.B * c.NH * c.T);
    kernels::attention_forward(out.data(), lse.data(), qkv.data(), c.B, c.T, c.C, c.NH);
    ref::Vec ow;
    ref::attention_fwd(ow, to_d(qkv), c.B, c.T, c.C, c.NH);
    EXPECT_LT(rel_err(out, ow), 2e-6) << c.T;
    std::vector<float> dqkv(qkv.size(), 123.0f);  // poison: must be overwritten
    kernels::attention_backward(dqkv.data(), g.data(), qkv.data(), out.data(), lse.data(), c.B,
                                c.T, c.C, c.NH);
    ref::Vec dw(qkv.size(), 0.0);
    ref::attention_bwd(dw, to_d(g), to_d(qkv), c.B, c.T, c.C, c.NH);
    EXPECT_LT(rel_err(dqkv, dw), 1e-5) << c.T;
  }
}

// attention_rows over a key/value cache (keys and values in their own arrays, queries in
// another) gives attention_forward's rows bit for bit, however the rows are split into calls:
// one call, rows one by one, and splits that cross the 64-row query blocks.
TEST_P(NnOnTarget, AttentionRowsAreTheForwardsRowsInAnySplit) {
  std::mt19937 rng(5);
  const size_t T = 150, C = 48, NH = 2, HS = C / NH;
  const auto qkv = randf(T * 3 * C, rng, 1.5f);
  std::vector<float> want(T * C), lse(NH * T);
  kernels::attention_forward(want.data(), lse.data(), qkv.data(), 1, T, C, NH);
  std::vector<float> keys(T * C), vals(T * C), q(T * C);  // a cache's layout: stride C
  for (size_t t = 0; t < T; ++t)
    for (size_t c = 0; c < C; ++c) {
      q[t * C + c] = qkv[t * 3 * C + c];
      keys[t * C + c] = qkv[t * 3 * C + C + c];
      vals[t * C + c] = qkv[t * 3 * C + 2 * C + c];
    }
  std::vector<float> scratch(kernels::attention_rows_scratch(T));
  for (const std::vector<size_t>& cuts :
       {std::vector<size_t>{0, T}, std::vector<size_t>{0, 1, 2, 63, 64, 65, 129, T},
        std::vector<size_t>{0, 100, 101, T}}) {
    std::vector<float> got(T * C, std::numeric_limits<float>::quiet_NaN());  // poison
    for (size_t i = 0; i + 1 < cuts.size(); ++i)
      for (size_t h = 0; h < NH; ++h)
        kernels::attention_rows(got.data() + cuts[i] * C + h * HS, C,
                                q.data() + cuts[i] * C + h * HS, C, keys.data() + h * HS,
                                vals.data() + h * HS, C, HS, cuts[i], cuts[i + 1] - cuts[i],
                                scratch.data());
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float)))
        << cuts.size() - 1 << " calls";
  }
}

TEST_P(NnOnTarget, SoftmaxCrossEntropy) {
  std::mt19937 rng(4);
  const size_t R = 37, V = 1003, Vp = 1024;
  auto logits = randf(R * Vp, rng, 4.0f);
  std::vector<int32_t> t(R);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(V) - 1);
  for (auto& v : t) v = pick(rng);
  t[5] = -1;  // ignored position
  ref::Vec lw(R * V);
  for (size_t r = 0; r < R; ++r)
    for (size_t c = 0; c < V; ++c) lw[r * V + c] = logits[r * Vp + c];
  std::vector<float> losses(R);
  kernels::softmax_cross_entropy(logits.data(), losses.data(), t.data(), R, V, Vp, 0.25f);
  for (size_t r = 0; r < R; ++r) {
    if (t[r] < 0) {
      EXPECT_EQ(losses[r], 0.0f);
      for (size_t c = 0; c < Vp; ++c) ASSERT_EQ(logits[r * Vp + c], 0.0f);
      continue;
    }
    ref::Vec row(lw.begin() + static_cast<long>(r * V), lw.begin() + static_cast<long>((r + 1) * V)), d;
    const double want = ref::cross_entropy(row, {t[r]}, 1, V, &d);
    EXPECT_NEAR(losses[r], want, 1e-5 * (1 + std::fabs(want)));
    for (size_t c = 0; c < V; ++c) ASSERT_NEAR(logits[r * Vp + c], 0.25 * d[c], 1e-6);
    for (size_t c = V; c < Vp; ++c) ASSERT_EQ(logits[r * Vp + c], 0.0f);
  }
}

// The gradient's exponent range as the cross-entropy kernels report it: exactly the range of
// the values they wrote together with the targets' scaled probabilities (each target's value
// before the subtraction), with rows whose probabilities underflow to subnormals (-127).
TEST_P(NnOnTarget, CrossEntropyGradientExponentRanges) {
  std::mt19937 rng(9);
  const size_t R = 23, V = 777, Vp = 832;
  for (float spread : {3.0f, 40.0f}) {  // 40: exp(x − m) reaches the subnormals
    SCOPED_TRACE(spread);
    auto logits = randf(R * Vp, rng, spread);
    std::vector<int32_t> t(R);
    for (auto& v : t) v = static_cast<int32_t>(rng() % V);
    t[3] = -1;
    const float g = 0.125f;
    std::vector<float> losses(R);
    ExponentRange got;
    kernels::softmax_cross_entropy(logits.data(), losses.data(), t.data(), R, V, Vp, g, &got);
    uint32_t want = kNoExponentBounds;
    for (size_t r = 0; r < R; ++r)
      for (size_t c = 0; c < Vp; ++c) {
        want = add_exponent_bounds(want, logits[r * Vp + c]);
        if (t[r] == static_cast<int32_t>(c))
          want = add_exponent_bounds(want, logits[r * Vp + c] + g);
      }
    const ExponentRange w = exponent_range_of_bounds(want);
    EXPECT_TRUE(got.known);
    EXPECT_EQ(got.lo, w.lo);
    EXPECT_EQ(got.hi, w.hi);
    EXPECT_EQ(got.lo == -127, spread > 10.0f);
    // scale_rows: exactly the scaled values' range.
    std::vector<float> x = randf(R * Vp, rng, spread), mul(R);
    for (auto& m : mul) m = std::ldexp(1.0f, static_cast<int>(rng() % 40) - 20);
    kernels::scale_rows(x.data(), R, V, Vp, mul.data(), &got);
    uint32_t scaled = kNoExponentBounds;
    for (const float v : x) scaled = add_exponent_bounds(scaled, v);
    EXPECT_EQ(got.lo, exponent_range_of_bounds(scaled).lo);
    EXPECT_EQ(got.hi, exponent_range_of_bounds(scaled).hi);
  }
}

// The vocabulary split over three "ranks" (the last holding only padding): each rank's
// exp(x − m), m and Σexp, combined as the model does, then each row scaled to g[r] · softmax
// minus g[r] at the target: the FP64 gradient of Σ_r g[r] · loss_r (g of mixed signs).
TEST_P(NnOnTarget, CrossEntropyHalvesOverASplitVocabulary) {
  std::mt19937 rng(6);
  const size_t R = 9, V = 700;
  const size_t parts[3][2] = {{0, 384}, {384, 700}, {700, 700}};  // [v0, v1) of each rank
  const size_t Vp = 384;                                          // each rank's padded columns
  const auto full = randf(R * V, rng, 5.0f);
  std::vector<int32_t> t(R);
  for (size_t r = 0; r < R; ++r) t[r] = static_cast<int32_t>(rng() % V);
  const ref::Vec g = {0.5, -1.25, 2.0, 0.0, 1.0, -0.125, 3.0, 0.75, -2.0};
  std::vector<std::vector<float>> x(3), m(3, std::vector<float>(R)), s(3, std::vector<float>(R));
  for (size_t q = 0; q < 3; ++q) {
    x[q].assign(R * Vp, 7.0f);  // padding columns poisoned: they must come out 0
    for (size_t r = 0; r < R; ++r)
      for (size_t v = parts[q][0]; v < parts[q][1]; ++v)
        x[q][r * Vp + v - parts[q][0]] = full[r * V + v];
    kernels::logit_row_exps(x[q].data(), R, parts[q][1] - parts[q][0], Vp, m[q].data(),
                            s[q].data());
  }
  ref::Vec d;
  ref::cross_entropy(to_d(full), t, R, V, &d, &g);
  for (size_t r = 0; r < R; ++r) {
    float M = -INFINITY, S = 0;
    for (size_t q = 0; q < 3; ++q) M = std::max(M, m[q][r]);
    for (size_t q = 0; q < 3; ++q) S += s[q][r] == 0.0f ? 0.0f : s[q][r] * std::exp(m[q][r] - M);
    double want_s = 0;
    for (size_t v = 0; v < V; ++v) want_s += std::exp(double(full[r * V + v]) - M);
    EXPECT_NEAR(S, want_s, 1e-5 * want_s) << r;
    for (size_t q = 0; q < 3; ++q) {
      const float mul =
          static_cast<float>(g[r]) * (s[q][r] == 0.0f ? 0.0f : std::exp(m[q][r] - M) / S);
      kernels::scale_rows(x[q].data() + r * Vp, 1, parts[q][1] - parts[q][0], Vp, &mul);
      const size_t tv = static_cast<size_t>(t[r]);
      if (tv >= parts[q][0] && tv < parts[q][1])
        x[q][r * Vp + tv - parts[q][0]] -= static_cast<float>(g[r]);
      for (size_t v = parts[q][0]; v < parts[q][1]; ++v)
        ASSERT_NEAR(x[q][r * Vp + v - parts[q][0]], d[r * V + v],
                    2e-6 * (1 + std::fabs(d[r * V + v])))
            << r << " " << v;
      for (size_t c = parts[q][1] - parts[q][0]; c < Vp; ++c) ASSERT_EQ(x[q][r * Vp + c], 0.0f);
    }
  }
}

FP8LM_INSTANTIATE_ON_EVERY_TARGET(NnOnTarget);

}  // namespace
}  // namespace fp8lm
