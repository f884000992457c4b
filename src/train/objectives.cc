#include "train/objectives.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace fp8lm {

namespace {

// σ(x) and −log σ(x) without overflow for large |x|.
double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}
double neg_log_sigmoid(double x) {
  return x >= 0 ? std::log1p(std::exp(-x)) : -x + std::log1p(std::exp(x));
}

}  // namespace

std::vector<double> row_logps(const float* token_losses, const int32_t* targets, size_t rows,
                              size_t T) {
  std::vector<double> lp(rows, 0.0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t t = r * T; t < (r + 1) * T; ++t)
      if (targets[t] >= 0) lp[r] -= static_cast<double>(token_losses[t]);
  return lp;
}

void DpoStats::add(const DpoStats& o) {
  loss += o.loss;
  margin += o.margin;
  chosen_reward += o.chosen_reward;
  rejected_reward += o.rejected_reward;
  pairs += o.pairs;
  correct += o.correct;
  policy_correct += o.policy_correct;
}

void dpo_weights(const float* policy_losses, const float* ref_losses, const int32_t* targets,
                 size_t rows, size_t T, double beta, double scale, float* w, DpoStats* stats) {
  FP8LM_CHECK(rows % 2 == 0, "DPO: ", rows, " rows, not pairs");
  const std::vector<double> pi = row_logps(policy_losses, targets, rows, T);
  const std::vector<double> ref = row_logps(ref_losses, targets, rows, T);
  std::fill(w, w + rows * T, 0.0f);
  auto has_targets = [&](size_t r) {
    return std::any_of(targets + r * T, targets + (r + 1) * T, [](int32_t t) { return t >= 0; });
  };
  for (size_t i = 0; i < rows; i += 2) {
    if (!has_targets(i) || !has_targets(i + 1)) continue;  // padding of an evaluation batch
    const double rc = beta * (pi[i] - ref[i]), rr = beta * (pi[i + 1] - ref[i + 1]);
    const double z = rc - rr;
    const double g = scale * beta * sigmoid(-z);  // ∂L/∂ℓ on the chosen row's tokens
    for (size_t k = 0; k < 2; ++k) {
      const size_t r = i + k;
      for (size_t t = r * T; t < (r + 1) * T; ++t)
        if (targets[t] >= 0) w[t] = static_cast<float>(k == 0 ? g : -g);
    }
    stats->loss += neg_log_sigmoid(z);
    stats->margin += z;
    stats->chosen_reward += rc;
    stats->rejected_reward += rr;
    stats->pairs += 1;
    stats->correct += z > 0 ? 1 : 0;
    stats->policy_correct += pi[i] > pi[i + 1] ? 1 : 0;
  }
}

void GrpoStats::add(const GrpoStats& o) {
  loss += o.loss;
  kl += o.kl;
  clipped += o.clipped;
  rows += o.rows;
}

void grpo_weights(const float* losses, const float* old_losses, const float* ref_losses,
                  const int32_t* targets, const double* advantages, size_t rows, size_t T,
                  double clip, double kl_coef, double scale, float* w, GrpoStats* stats) {
  std::fill(w, w + rows * T, 0.0f);
  for (size_t r = 0; r < rows; ++r) {
    size_t n = 0;
    for (size_t t = r * T; t < (r + 1) * T; ++t) n += targets[t] >= 0 ? 1 : 0;
    if (n == 0) continue;
    const double a = advantages[r], inv_n = 1.0 / static_cast<double>(n);
    double loss = 0, kl = 0, clipped = 0;
    for (size_t t = r * T; t < (r + 1) * T; ++t) {
      if (targets[t] < 0) continue;
      const double l = losses[t];
      const double old = old_losses != nullptr ? old_losses[t] : l;
      const double ratio = std::exp(old - l);
      const double lo = 1.0 - clip, hi = 1.0 + clip;
      const double rc = std::clamp(ratio, lo, hi);
      // min(r·A, clip(r)·A): the clipped term is chosen (and carries no gradient) when it is
      // smaller, i.e. when the ratio left the interval in the direction A rewards.
      const bool use_clipped = rc * a < ratio * a;
      const double surrogate = use_clipped ? rc * a : ratio * a;
      const double d = l - static_cast<double>(ref_losses[t]);  // log π_ref − log π
      const double k3 = std::exp(d) - d - 1.0;
      loss += -(surrogate - kl_coef * k3) * inv_n;
      kl += k3 * inv_n;
      clipped += use_clipped ? inv_n : 0.0;
      // ∂/∂ℓ: ratio·A → −ratio·A (unclipped); k3 → exp(d) − 1.
      const double ds = use_clipped ? 0.0 : -ratio * a;
      const double dk = std::exp(d) - 1.0;
      w[t] = static_cast<float>(scale * inv_n * (-(ds - kl_coef * dk)));
    }
    stats->loss += loss;
    stats->kl += kl;
    stats->clipped += clipped;
    stats->rows += 1;
  }
}

std::vector<double> group_advantages(const std::vector<double>& rewards, size_t k) {
  FP8LM_CHECK(k > 0 && rewards.size() % k == 0, "GRPO: ", rewards.size(),
              " rewards are not groups of ", k);
  std::vector<double> a(rewards.size());
  for (size_t g = 0; g < rewards.size(); g += k) {
    double mean = 0;
    for (size_t i = g; i < g + k; ++i) mean += rewards[i];
    mean /= static_cast<double>(k);
    double var = 0;
    for (size_t i = g; i < g + k; ++i) var += (rewards[i] - mean) * (rewards[i] - mean);
    const double sd = std::sqrt(var / static_cast<double>(k));
    for (size_t i = g; i < g + k; ++i) a[i] = (rewards[i] - mean) / (sd + 1e-4);
  }
  return a;
}

}  // namespace fp8lm
