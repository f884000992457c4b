// The steps of preference and reinforcement fine-tuning (docs/post_training.md): DPO on
// preference pairs and GRPO on prompts with verifiable rewards, each against the frozen
// reference model, as per-token weights of one backward of the policy (train/objectives.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/sft_jsonl.h"
#include "data/tokenizer.h"
#include "model/gpt.h"
#include "train/completion.h"
#include "train/objectives.h"
#include "train/reference.h"
#include "train/rewards.h"

namespace fp8lm {

// One DPO micro-batch (rows 2i chosen, 2i + 1 rejected, as ExampleLoader gives preference
// pairs): the reference's and the policy's log-probabilities, then the policy's gradient of
// scale · Σ_pairs L_i written (or with `accumulate` added) into its gradient buffers.
DpoStats dpo_micro_batch(Gpt& policy, ReferenceModel& ref, const int32_t* inputs,
                         const int32_t* targets, double beta, double scale, bool accumulate);
// The DPO statistics of the first `batches` evaluation batches of `data` (no gradients).
DpoStats dpo_evaluate(Gpt& policy, ReferenceModel& ref, const Batches& data, int batches,
                      double beta);

// GRPO's prompts: the lines of a JSONL prompt file and their tokens (<|endoftext|> then the
// prompt). Every prompt must leave max_new_tokens + 1 positions of the model's T (an error
// naming the file and line otherwise).
struct GrpoPrompts {
  std::vector<PromptLine> lines;
  std::vector<std::vector<int32_t>> tokens;
};
GrpoPrompts read_grpo_prompts(const std::string& path, const Tokenizer& tok, size_t T,
                              int max_new_tokens);

// A GRPO micro-batch: for each prompt line in `lines`, K completions sampled from the policy,
// as rows of the policy's B × T (prompt, completion and its <|endoftext|> when it stopped;
// targets on the completion), their rewards and group-normalised advantages.
struct GrpoRows {
  std::vector<int32_t> inputs, targets;
  std::vector<double> rewards, advantages;
  std::vector<std::string> completions;
};
GrpoRows grpo_rows(Gpt& policy, const GrpoPrompts& prompts, const std::vector<size_t>& lines,
                   int K, const CompletionOptions& o, const Rewards& rewards,
                   const Tokenizer& tok);
// The policy's gradient of scale · Σ_rows L_i (objectives.h). old_losses: the token losses of
// the policy that sampled the rows; null: the policy itself (the trainer samples and updates
// once per batch, so the ratio is 1 and its clip bounds nothing until the policy moves).
GrpoStats grpo_micro_batch(Gpt& policy, ReferenceModel& ref, const GrpoRows& rows, double clip,
                           double kl, double scale, bool accumulate,
                           const float* old_losses = nullptr);
// The mean reward of the policy's greedy completions of the first n prompts.
double grpo_evaluate(Gpt& policy, const GrpoPrompts& prompts, size_t n, int max_new_tokens,
                     const Rewards& rewards, const Tokenizer& tok);

}  // namespace fp8lm
