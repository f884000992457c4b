// Precision-decoupled AdamW against an FP64 reference AdamW, per precision level; memory
// per parameter from the allocations; skipping on non-finite gradients; clipping.
#include "optim/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/check.h"
#include "core/memory.h"
#include "kernels/cast.h"
#include "kernels/simd_test_util.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

// An unscaled FP32 gradient view of g.
ScaledView f32(const std::vector<float>& g) {
  return tensor_view(static_cast<const void*>(g.data()), DType::kF32,
                     Shape{static_cast<int64_t>(g.size())}, nullptr);
}

struct RefAdamW {  // FP64, the textbook algorithm with decoupled weight decay
  std::vector<double> theta, m, v;
  void step(const std::vector<double>& g, double lr, double b1, double b2, double eps,
            double wd, int t) {
    for (size_t i = 0; i < theta.size(); ++i) {
      theta[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(b1, t)), vh = v[i] / (1 - std::pow(b2, t));
      theta[i] -= lr * mh / (std::sqrt(vh) + eps);
    }
  }
};

std::vector<float> normal(size_t n, float sd, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

// Runs 5 steps of `level` and of the reference on the same gradients (given to the optimizer
// in the level's gradient format, the reference gets the very same dequantized values).
void check_level(PrecisionLevel level, double master_tol_rel_lr, double master_tol_ulp) {
  std::mt19937 rng(42);
  const size_t n = 5000;
  const float lr = 1e-3f;
  const std::vector<float> w0 = normal(n, 0.02f, rng);
  AdamW opt(level, {}, {"w"}, {n}, {true}, {w0.data()});
  RefAdamW ref{std::vector<double>(w0.begin(), w0.end()), std::vector<double>(n, 0),
               std::vector<double>(n, 0)};
  const StateFormats f = level_plan(level).states;
  for (int t = 1; t <= 5; ++t) {
    const std::vector<float> g = normal(n, 1e-3f * static_cast<float>(t), rng);
    std::vector<uint8_t> gq(n * dtype_size(f.grad));
    float g_inv = 1.0f;
    std::vector<double> gd(n);
    if (f.grad == DType::kF32) {
      std::memcpy(gq.data(), g.data(), n * sizeof(float));
      for (size_t i = 0; i < n; ++i) gd[i] = g[i];
    } else {
      const float s = 256.0f / kernels::amax(g.data(), n);
      kernels::quantize(gq.data(), f.grad, g.data(), n, s);
      g_inv = 1.0f / s;
      for (size_t i = 0; i < n; ++i) gd[i] = static_cast<double>(from_e4m3_ref(gq[i])) * g_inv;
    }
    const ScaledView gv = tensor_view(static_cast<const void*>(gq.data()), f.grad,
                                      Shape{static_cast<int64_t>(n)}, &g_inv);
    const StepResult r = opt.step({gv}, lr);
    ASSERT_FALSE(r.skipped);
    ref.step(gd, lr, 0.9, 0.95, 1e-8, 0.1, t);
  }
  std::vector<float> w(n);
  opt.master_values(0, w.data());
  double amax = 0, worst = 0;
  for (size_t i = 0; i < n; ++i) {
    amax = std::max(amax, std::fabs(ref.theta[i]));
    worst = std::max(worst, std::fabs(w[i] - ref.theta[i]));
  }
  // Budget: quantization of the master (ulps at the tensor's amax, per step) and of the
  // moments (as a fraction of lr per step).
  const double tol = 5 * (master_tol_rel_lr * lr + master_tol_ulp * amax);
  std::printf("%s: max |master - reference| = %.3e (budget %.3e, 5 steps of lr %.0e)\n",
              std::string(level_name(level)).c_str(), worst, tol, lr);
  EXPECT_LE(worst, tol);
  // The update moved the weights far more than the error: a missing or wrong update fails.
  double moved = 0;
  for (size_t i = 0; i < n; ++i) moved = std::max(moved, std::fabs(ref.theta[i] - w0[i]));
  EXPECT_GT(moved, 2 * tol);
  EXPECT_EQ(opt.step_count(), 5);
}

class AdamWOnTarget : public OnEveryTarget {};

TEST_P(AdamWOnTarget, Fp32MatchesReference) { check_level(PrecisionLevel::kFP32, 1e-6, 1e-7); }
TEST_P(AdamWOnTarget, O1MatchesReferenceWithinFp16Master) {
  check_level(PrecisionLevel::kO1, 1e-3, std::ldexp(1.0, -11));
}
TEST_P(AdamWOnTarget, O2MatchesReferenceWithinStateQuantization) {
  // E4M3 m1 carries up to 2^-4 relative error into each step's update.
  check_level(PrecisionLevel::kO2, 0.1, std::ldexp(1.0, -11));
}
FP8LM_INSTANTIATE_ON_EVERY_TARGET(AdamWOnTarget);

TEST(AdamW, StateBytesPerParameterFromAllocations) {
  const size_t n = 1 << 20;
  std::vector<float> w(n, 0.01f);
  for (PrecisionLevel l : {PrecisionLevel::kFP32, PrecisionLevel::kO1, PrecisionLevel::kO2}) {
    const int64_t m0 = mem_stats(MemCategory::kMaster).current;
    const int64_t a0 = mem_stats(MemCategory::kOptimM1).current;
    const int64_t b0 = mem_stats(MemCategory::kOptimM2).current;
    AdamW opt(l, {}, {"w"}, {n}, {true}, {w.data()});
    const double master = double(mem_stats(MemCategory::kMaster).current - m0) / n;
    const double m1 = double(mem_stats(MemCategory::kOptimM1).current - a0) / n;
    const double m2 = double(mem_stats(MemCategory::kOptimM2).current - b0) / n;
    const double grad = double(dtype_size(level_plan(l).states.grad));
    std::printf("%s: master %.0f + m1 %.0f + m2 %.0f + grad %.0f = %.0f bytes/param\n",
                std::string(level_name(l)).c_str(), master, m1, m2, grad,
                master + m1 + m2 + grad);
    const double want = l == PrecisionLevel::kFP32 ? 16 : l == PrecisionLevel::kO1 ? 11 : 6;
    EXPECT_EQ(master + m1 + m2 + grad, want);
  }
}

TEST(AdamW, NonFiniteGradientsSkipTheStep) {
  std::vector<float> w = {0.5f, -0.25f, 1.0f};
  AdamW opt(PrecisionLevel::kO2, {}, {"w"}, {3}, {true}, {w.data()});
  std::vector<float> before(3), after(3);
  opt.master_values(0, before.data());
  std::vector<float> g = {0.1f, std::numeric_limits<float>::infinity(), 0.2f};
  const StepResult r = opt.step({f32(g)}, 1e-2f);
  EXPECT_TRUE(r.skipped);
  EXPECT_EQ(opt.skipped_steps(), 1);
  EXPECT_EQ(opt.step_count(), 0);
  opt.master_values(0, after.data());
  EXPECT_EQ(before, after);
  g[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(opt.step({f32(g)}, 1e-2f).skipped);
  g[1] = 0.3f;
  const StepResult ok = opt.step({f32(g)}, 1e-2f);
  EXPECT_FALSE(ok.skipped);
  EXPECT_NEAR(ok.grad_norm, std::sqrt(0.01 + 0.09 + 0.04), 1e-6);
  opt.master_values(0, after.data());
  for (float v : after) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NE(before, after);
}

// Finite gradients whose update overflows a state: refused before any tensor is written
// (the first tensor's update alone would be finite).
TEST(AdamW, NonFiniteUpdatesSkipTheStep) {
  std::vector<float> a = {1.0f, 2.0f}, w = {3.0e38f, -1.0f};
  AdamW opt(PrecisionLevel::kFP32, {}, {"a", "w"}, {2, 2}, {false, false},
            {a.data(), w.data()});
  std::vector<float> ga = {0.5f, 0.5f}, gw = {-1.0f, 1.0f};
  const StepResult r =
      opt.step({f32(ga), f32(gw)}, /*lr=*/1e38f);
  EXPECT_TRUE(r.skipped);
  EXPECT_TRUE(std::isfinite(r.grad_norm));
  EXPECT_EQ(opt.step_count(), 0);
  EXPECT_EQ(opt.skipped_steps(), 1);
  std::vector<float> after(2);
  opt.master_values(0, after.data());
  EXPECT_EQ(after, a);
  opt.master_values(1, after.data());
  EXPECT_EQ(after, w);
  EXPECT_FALSE(opt.step({f32(ga), f32(gw)}, 1e-3f).skipped);
  EXPECT_EQ(opt.step_count(), 1);
}

TEST(AdamW, ClippingScalesTheGradient) {
  // With clipping, the step equals an unclipped step on gradients scaled to the clip norm.
  std::vector<float> w = {0.5f, -0.25f};
  std::vector<float> g = {3.0f, 4.0f};  // norm 5
  AdamW a(PrecisionLevel::kFP32, {}, {"w"}, {2}, {false}, {w.data()});
  AdamW b(PrecisionLevel::kFP32, {}, {"w"}, {2}, {false}, {w.data()});
  EXPECT_NEAR(a.step({f32(g)}, 0.1f, 1.0f, 1.0f).grad_norm, 5.0, 1e-6);
  std::vector<float> gs = {0.6f, 0.8f};
  b.step({f32(gs)}, 0.1f);
  // Adam's first step is invariant to the gradient scale: run a second step to see it.
  a.step({f32(gs)}, 0.1f, 1.0f, 1.0f);
  b.step({f32(gs)}, 0.1f);
  std::vector<float> wa(2), wb(2);
  a.master_values(0, wa.data());
  b.master_values(0, wb.data());
  EXPECT_NEAR(wa[0], wb[0], 1e-6);
  EXPECT_NEAR(wa[1], wb[1], 1e-6);
}

// The probe sees how storing each state narrowed it, without changing the update.
TEST(AdamW, ProbeMeasuresStateStorage) {
  std::mt19937 rng(5);
  const size_t n = 4099;
  const std::vector<float> w = normal(n, 0.02f, rng), g = normal(n, 1e-3f, rng);
  AdamW plain(PrecisionLevel::kO2, {}, {"w"}, {n}, {true}, {w.data()});
  AdamW probed(PrecisionLevel::kO2, {}, {"w"}, {n}, {true}, {w.data()});
  QuantProbe probe;
  probed.set_probe(&probe);
  for (int t = 0; t < 3; ++t) {
    probe.arm(t == 2);
    plain.step({f32(g)}, 1e-3f);
    probed.step({f32(g)}, 1e-3f);
  }
  const std::vector<QuantRecord> r = probe.take();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].role, "master");
  EXPECT_EQ(r[0].dtype, DType::kF16);
  EXPECT_EQ(r[1].role, "m1");
  EXPECT_EQ(r[1].dtype, DType::kE4M3);
  EXPECT_EQ(r[2].role, "m2");
  // FP16 keeps ~11 bits (SNR ~ 60+ dB), E4M3 ~4 (~ 30 dB).
  EXPECT_GT(r[0].stats.snr_db(), 55.0);
  EXPECT_GT(r[1].stats.snr_db(), 20.0);
  EXPECT_LT(r[1].stats.snr_db(), 45.0);
  EXPECT_GT(r[2].stats.snr_db(), 55.0);
  EXPECT_EQ(r[0].stats.n, n);
  const AdamW::Param &a = plain.params()[0], &b = probed.params()[0];
  EXPECT_EQ(std::memcmp(a.master.data.data(), b.master.data.data(), a.master.data.bytes()), 0);
  EXPECT_EQ(std::memcmp(a.m1.data.data(), b.m1.data.data(), a.m1.data.bytes()), 0);
  EXPECT_EQ(a.m1.meta.scale_inv, b.m1.meta.scale_inv);
}

// The precision-decoupling ablations (precision.master/m1/m2): each stored state is the
// cast of the FP32 update the probe replays from the same old states — an SNR at the
// format's precision (BF16 ~8 bits, E4M3 ~4, FP16 ~11) and nothing clipped — and the
// master moves. Unsupported combinations are refused.
TEST(AdamW, StateFormatOverrides) {
  std::mt19937 rng(9);
  const size_t n = 4099;
  const std::vector<float> w = normal(n, 0.02f, rng), g = normal(n, 1e-3f, rng);
  std::vector<uint8_t> gq(n);
  const float s = 256.0f / kernels::amax(g.data(), n);
  kernels::quantize(gq.data(), DType::kE4M3, g.data(), n, s);
  float g_inv = 1.0f / s;
  const ScaledView gv = tensor_view(static_cast<const void*>(gq.data()), DType::kE4M3,
                                    Shape{static_cast<int64_t>(n)}, &g_inv);
  auto min_snr = [](DType t) { return t == DType::kE4M3 ? 20.0 : t == DType::kBF16 ? 40.0 : 55.0; };
  const StateFormats o2 = level_plan(PrecisionLevel::kO2).states;
  for (StateFormats f : {StateFormats{DType::kBF16, o2.m1, o2.m2, o2.grad},
                         StateFormats{DType::kE4M3, o2.m1, o2.m2, o2.grad},
                         StateFormats{o2.master, o2.m1, DType::kE4M3, o2.grad}}) {
    AdamWConfig cfg;
    cfg.states = f;
    AdamW opt(PrecisionLevel::kO2, cfg, {"w"}, {n}, {true}, {w.data()});
    EXPECT_EQ(opt.params()[0].master.data.dtype(), f.master);
    EXPECT_EQ(opt.params()[0].m2.data.dtype(), f.m2);
    QuantProbe probe;
    opt.set_probe(&probe);
    probe.arm(true);
    for (int t = 0; t < 3; ++t) ASSERT_FALSE(opt.step({gv}, 1e-3f).skipped);
    const std::vector<QuantRecord> r = probe.take();
    ASSERT_EQ(r.size(), 3u);
    const DType want[] = {f.master, f.m1, f.m2};
    for (size_t k = 0; k < 3; ++k) {
      const std::string what = r[k].role + " as " + std::string(dtype_name(r[k].dtype));
      EXPECT_EQ(r[k].dtype, want[k]) << what;
      EXPECT_GT(r[k].stats.snr_db(), min_snr(want[k])) << what;
      EXPECT_EQ(r[k].stats.saturated, 0u) << what;
    }
    std::vector<float> now(n);
    opt.master_values(0, now.data());
    double moved = 0;
    for (size_t i = 0; i < n; ++i) moved += std::fabs(now[i] - w[i]);
    EXPECT_GT(moved / n, 1e-4) << dtype_name(f.master);  // ~3 steps of lr 1e-3
  }
  AdamWConfig bad;
  bad.states = StateFormats{DType::kE4M3, DType::kE4M3, DType::kE4M3, DType::kE4M3};
  EXPECT_THROW(AdamW(PrecisionLevel::kO2, bad, {"w"}, {n}, {true}, {w.data()}), Error);
  bad.states = StateFormats{DType::kBF16, DType::kF32, DType::kF32, DType::kF32};
  EXPECT_THROW(AdamW(PrecisionLevel::kFP32, bad, {"w"}, {n}, {true}, {w.data()}), Error);
}

TEST(AdamW, SumSquaresOfScaledGradients) {
  std::mt19937 rng(3);
  const std::vector<float> g = normal(100003, 1.0f, rng);
  std::vector<uint8_t> q(g.size());
  kernels::quantize(q.data(), DType::kE4M3, g.data(), g.size(), 64.0f);
  double want = 0;
  for (uint8_t c : q) want += std::pow(static_cast<double>(from_e4m3_ref(c)) / 64, 2);
  const float s = 1.0f / 64;
  const ScaledView v = tensor_view(static_cast<const void*>(q.data()), DType::kE4M3,
                                   Shape{static_cast<int64_t>(q.size())}, &s);
  EXPECT_NEAR(kernels::sum_squares(v), want, 1e-6 * want);
  EXPECT_THROW(level_from_name("O4"), Error);
}

}  // namespace
}  // namespace fp8lm
