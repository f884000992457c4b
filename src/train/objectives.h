// Preference and reinforcement objectives as per-token weights (docs/post_training.md).
//
// DPO and GRPO losses are functions of the policy's log-probabilities of the response tokens,
// ℓ_t = −log p(token t) the model's token loss. Their gradient is Σ_t (∂L/∂ℓ_t) · ∇ℓ_t, so one
// backward of the model with per-token weights w_t = ∂L/∂ℓ_t gives the exact gradient of L.
// These functions compute L and the w_t from the token losses of a forward pass; the model
// calls them inside its forward_backward (Gpt::set_token_weight_fn), between the LM head's
// losses and their gradient, so one forward serves both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fp8lm {

// Sum over each row's target positions (targets ≥ 0) of log p = −loss; rows of T positions.
std::vector<double> row_logps(const float* token_losses, const int32_t* targets, size_t rows,
                              size_t T);

struct DpoStats {
  double loss = 0;     // Σ over pairs of −log σ(z)
  double margin = 0;   // Σ over pairs of z = β((π_c − ρ_c) − (π_r − ρ_r)): the reward margin
  double chosen_reward = 0, rejected_reward = 0;  // Σ β(π − ρ) of chosen / rejected
  size_t pairs = 0;
  size_t correct = 0;  // pairs with z > 0: the implicit reward prefers the chosen response
  size_t policy_correct = 0;  // pairs with π_c > π_r: the policy itself prefers it
  void add(const DpoStats& o);
};

// DPO (Rafailov et al. 2023) over rows 2i (chosen) and 2i + 1 (rejected) of `rows` rows: π, ρ
// the policy's and the reference's summed log-probabilities of each row's response,
// L_i = −log σ(z_i). Writes w (rows × T) = scale · ∂L_i/∂ℓ_t: +scale·β·σ(−z_i) on the chosen
// row's targets, its negative on the rejected's, 0 elsewhere; adds the pairs to `stats`
// (pairs with a row without targets, the padding of evaluation batches, are skipped).
void dpo_weights(const float* policy_losses, const float* ref_losses, const int32_t* targets,
                 size_t rows, size_t T, double beta, double scale, float* w, DpoStats* stats);

struct GrpoStats {
  double loss = 0;     // Σ over rows of the row's objective term (the mean over its tokens)
  double kl = 0;       // Σ over rows of the row's mean k3 KL estimate to the reference
  double clipped = 0;  // Σ over rows of the fraction of its tokens whose ratio was clipped
  size_t rows = 0;     // rows with at least one target
  void add(const GrpoStats& o);
};

// GRPO (Shao et al. 2024) per row i with advantage A_i and |o_i| target tokens, per target:
// ratio r = exp(old_ℓ − ℓ), KL = exp(ℓ − ref_ℓ) − (ℓ − ref_ℓ) − 1 (the k3 estimate of
// KL(π‖π_ref)), L_i = (1/|o_i|) Σ_t −[min(r·A, clip(r, 1−ε, 1+ε)·A) − kl_coef·KL].
// Writes w = scale · ∂L_i/∂ℓ_t and adds the rows to `stats` (the loss as the sum of L_i).
// old_losses: the token losses of the policy that sampled (null: the policy's own, r = 1).
void grpo_weights(const float* losses, const float* old_losses, const float* ref_losses,
                  const int32_t* targets, const double* advantages, size_t rows, size_t T,
                  double clip, double kl_coef, double scale, float* w, GrpoStats* stats);

// Group-normalised advantages: for groups of k consecutive rewards, (r − mean) / (std + 1e-4)
// with the group's population standard deviation (0 for a group whose rewards are all equal).
std::vector<double> group_advantages(const std::vector<double>& rewards, size_t k);

}  // namespace fp8lm
