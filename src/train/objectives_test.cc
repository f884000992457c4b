// The DPO and GRPO objectives against an independent FP64 evaluation of their losses: the
// per-token weights must be the losses' derivatives (central differences), the statistics
// their definitions; the group-normalised advantages.
#include "train/objectives.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace fp8lm {
namespace {

// Rows of T positions: targets on a random stretch of each row (the response).
struct Rows {
  size_t B, T;
  std::vector<int32_t> targets;
  std::vector<float> policy, ref, old;  // token losses −log p
};

Rows random_rows(size_t B, size_t T, uint32_t seed) {
  std::mt19937 rng(seed);
  Rows r{B, T, std::vector<int32_t>(B * T, -1), {}, {}, {}};
  std::uniform_real_distribution<float> loss(0.05f, 4.0f), shift(-0.4f, 0.4f);
  for (size_t b = 0; b < B; ++b) {
    const size_t start = rng() % (T / 2), len = 1 + rng() % (T / 2);
    for (size_t t = start; t < start + len; ++t) r.targets[b * T + t] = 1;
  }
  for (size_t i = 0; i < B * T; ++i) {
    r.policy.push_back(loss(rng));
    r.ref.push_back(r.policy.back() + shift(rng));
    r.old.push_back(r.policy.back() + shift(rng));
  }
  return r;
}

// The derivative of f (a function of the policy's token losses) at every target, by
// central differences in FP64 (the losses are perturbed as floats, which they are).
void expect_weights_are_derivatives(const Rows& r, const std::vector<float>& w, double scale,
                                    const std::function<double(const std::vector<float>&)>& f) {
  for (size_t i = 0; i < r.B * r.T; ++i) {
    if (r.targets[i] < 0) {
      EXPECT_EQ(w[i], 0.0f) << i;
      continue;
    }
    const float h = 1.0f / 1024;
    std::vector<float> up = r.policy, down = r.policy;
    up[i] += h;
    down[i] -= h;
    const double d = (f(up) - f(down)) / (2.0 * h);
    EXPECT_NEAR(w[i], scale * d, 1e-6 + 1e-4 * std::abs(scale * d)) << "position " << i;
  }
}

// −log σ(z), written independently of objectives.cc.
double dpo_reference_loss(const Rows& r, const std::vector<float>& policy, double beta) {
  double total = 0;
  for (size_t i = 0; i < r.B; i += 2) {
    double z = 0;
    for (size_t k = 0; k < 2; ++k)
      for (size_t t = (i + k) * r.T; t < (i + k + 1) * r.T; ++t)
        if (r.targets[t] >= 0) z += (k == 0 ? 1 : -1) * beta * (-(double)policy[t] + r.ref[t]);
    total += std::log(1.0 + std::exp(-z));
  }
  return total;
}

TEST(Objectives, DpoWeightsAreTheLossDerivativesAndStatsItsDefinitions) {
  const Rows r = random_rows(6, 10, 3);
  const double beta = 0.3, scale = 2.0 / 6;
  std::vector<float> w(r.B * r.T, 99.0f);
  DpoStats st;
  dpo_weights(r.policy.data(), r.ref.data(), r.targets.data(), r.B, r.T, beta, scale, w.data(), &st);
  EXPECT_EQ(st.pairs, 3u);
  EXPECT_NEAR(st.loss, dpo_reference_loss(r, r.policy, beta), 1e-9);
  EXPECT_NEAR(st.margin, st.chosen_reward - st.rejected_reward, 1e-9);
  size_t prefers = 0;  // pairs whose chosen row has the larger summed log-probability
  for (size_t i = 0; i < r.B; i += 2) {
    double c = 0, j = 0;
    for (size_t t = 0; t < r.T; ++t) {
      if (r.targets[i * r.T + t] >= 0) c -= r.policy[i * r.T + t];
      if (r.targets[(i + 1) * r.T + t] >= 0) j -= r.policy[(i + 1) * r.T + t];
    }
    prefers += c > j;
  }
  EXPECT_EQ(st.policy_correct, prefers);
  expect_weights_are_derivatives(r, w, scale, [&](const std::vector<float>& p) {
    return dpo_reference_loss(r, p, beta);
  });
  // At the reference (π = ρ) every margin is 0: loss log 2 per pair, no pair "correct".
  DpoStats at_ref;
  dpo_weights(r.ref.data(), r.ref.data(), r.targets.data(), r.B, r.T, beta, scale, w.data(), &at_ref);
  EXPECT_NEAR(at_ref.loss, 3 * std::log(2.0), 1e-12);
  EXPECT_EQ(at_ref.correct, 0u);
}

double grpo_reference_loss(const Rows& r, const std::vector<float>& lp_loss,
                           const std::vector<double>& adv, double clip, double kl) {
  double total = 0;
  for (size_t b = 0; b < r.B; ++b) {
    double sum = 0, n = 0;
    for (size_t t = b * r.T; t < (b + 1) * r.T; ++t) {
      if (r.targets[t] < 0) continue;
      const double lp = -(double)lp_loss[t], old = -(double)r.old[t], ref = -(double)r.ref[t];
      const double ratio = std::exp(lp - old);
      const double s = std::min(ratio * adv[b], std::clamp(ratio, 1 - clip, 1 + clip) * adv[b]);
      const double k3 = std::exp(ref - lp) - (ref - lp) - 1;
      sum += -(s - kl * k3);
      n += 1;
    }
    total += sum / n;
  }
  return total;
}

TEST(Objectives, GrpoWeightsAreTheLossDerivativesWithClippedRatios) {
  const Rows r = random_rows(8, 12, 4);
  const std::vector<double> adv = {1.2, -0.7, 0.0, 2.0, -1.5, 0.4, -0.1, 0.9};
  const double clip = 0.1, kl = 0.05, scale = 1.0 / 8;
  std::vector<float> w(r.B * r.T, 99.0f);
  GrpoStats st;
  grpo_weights(r.policy.data(), r.old.data(), r.ref.data(), r.targets.data(), adv.data(), r.B,
               r.T, clip, kl, scale, w.data(), &st);
  EXPECT_EQ(st.rows, 8u);
  EXPECT_GT(st.clipped, 0.0);  // ratios up to e^0.4 leave [0.9, 1.1]
  EXPECT_NEAR(st.loss, grpo_reference_loss(r, r.policy, adv, clip, kl), 1e-9);
  expect_weights_are_derivatives(r, w, scale, [&](const std::vector<float>& p) {
    return grpo_reference_loss(r, p, adv, clip, kl);
  });
  // Without a separate sampling policy the ratio is 1: nothing is clipped, and a row's
  // weights are −A/|o| plus the KL's part.
  GrpoStats own;
  grpo_weights(r.policy.data(), nullptr, r.ref.data(), r.targets.data(), adv.data(), r.B, r.T,
               clip, 0.0, 1.0, w.data(), &own);
  EXPECT_EQ(own.clipped, 0.0);
  for (size_t b = 0; b < r.B; ++b) {
    double n = 0;
    for (size_t t = b * r.T; t < (b + 1) * r.T; ++t) n += r.targets[t] >= 0;
    for (size_t t = b * r.T; t < (b + 1) * r.T; ++t)
      if (r.targets[t] >= 0) {
        EXPECT_NEAR(w[t], adv[b] / n, 1e-6) << b;
      }
  }
}

TEST(Objectives, GroupAdvantagesAreStandardisedPerGroup) {
  const std::vector<double> a = group_advantages({1, 0, 0, 0, 1, 1, 1, 1, 0.5, 0.25, 0, 1}, 4);
  ASSERT_EQ(a.size(), 12u);
  for (size_t g = 0; g < 12; g += 4) {
    double mean = 0, sq = 0;
    for (size_t i = g; i < g + 4; ++i) mean += a[i] / 4;
    for (size_t i = g; i < g + 4; ++i) sq += a[i] * a[i] / 4;
    EXPECT_NEAR(mean, 0.0, 1e-12);
    if (g != 4) {  // unit variance, up to the 1e-4 guard
      EXPECT_NEAR(sq, 1.0, 1e-3) << g;
    }
  }
  for (size_t i = 4; i < 8; ++i) EXPECT_EQ(a[i], 0.0);  // equal rewards: no signal
  EXPECT_GT(a[0], 0.0);
  EXPECT_LT(a[1], 0.0);
}

}  // namespace
}  // namespace fp8lm
