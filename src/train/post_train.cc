#include "train/post_train.h"

#include <algorithm>
#include <utility>

#include "core/check.h"

namespace fp8lm {

namespace {

// The policy's gradient of Σ_t w_t ℓ_t, the weights decided by `fn` from this forward's own
// losses in groups of `group` rows (Gpt::set_token_weight_fn).
void backward_weighted(Gpt& policy, const int32_t* inputs, const int32_t* targets, size_t group,
                       Gpt::TokenWeightFn fn, bool accumulate) {
  struct Off {  // the policy keeps no reference to the caller's frame, however this ends
    Gpt& g;
    ~Off() { g.set_token_weight_fn(nullptr, 1); }
  } off{policy};
  policy.set_token_weight_fn(std::move(fn), group);
  policy.forward_backward(inputs, targets, accumulate);
}

}  // namespace

DpoStats dpo_micro_batch(Gpt& policy, ReferenceModel& ref, const int32_t* inputs,
                         const int32_t* targets, double beta, double scale, bool accumulate) {
  const size_t T = policy.seq();
  const float* rl = ref.token_losses(inputs, targets);
  const std::vector<float> ref_losses(rl, rl + policy.batch() * T);
  DpoStats st;
  backward_weighted(
      policy, inputs, targets, 2 * T,
      [&](size_t r0, size_t n, const float* losses, float* w) {
        dpo_weights(losses + r0, ref_losses.data() + r0, targets + r0, n / T, T, beta, scale,
                    w + r0, &st);
      },
      accumulate);
  return st;
}

DpoStats dpo_evaluate(Gpt& policy, ReferenceModel& ref, const Batches& data, int batches,
                      double beta) {
  const size_t B = policy.batch(), T = policy.seq();
  std::vector<int32_t> in(B * T), tgt(B * T);
  std::vector<float> w(B * T);
  DpoStats all;
  const size_t n = std::min(static_cast<size_t>(batches), data.eval_batches());
  for (size_t j = 0; j < n; ++j) {
    data.eval_batch(j, in.data(), tgt.data());
    const float* rl = ref.token_losses(in.data(), tgt.data());
    const std::vector<float> ref_losses(rl, rl + B * T);
    policy.forward(in.data(), tgt.data());
    DpoStats st;
    dpo_weights(policy.token_losses(), ref_losses.data(), tgt.data(), B, T, beta, 1.0, w.data(), &st);
    all.add(st);
  }
  return all;
}

GrpoPrompts read_grpo_prompts(const std::string& path, const Tokenizer& tok, size_t T,
                              int max_new_tokens) {
  GrpoPrompts p;
  p.lines = read_prompts_jsonl(path);
  for (const PromptLine& l : p.lines) {
    p.tokens.push_back(prompt_tokens(tok, l.prompt));
    const size_t room = static_cast<size_t>(max_new_tokens) + 1;
    if (p.tokens.back().size() + room > T + 1)
      fail(l.where, ": the prompt has ", p.tokens.back().size(), " tokens; with ", room - 1,
           " new ones (finetune.max_new_tokens) and the end mark that is ",
           p.tokens.back().size() + room, ", more than model.seq_len + 1 = ", T + 1);
  }
  return p;
}

GrpoRows grpo_rows(Gpt& policy, const GrpoPrompts& prompts, const std::vector<size_t>& lines,
                   int K, const CompletionOptions& o, const Rewards& rewards,
                   const Tokenizer& tok) {
  const size_t B = policy.batch(), T = policy.seq(), k = static_cast<size_t>(K);
  FP8LM_CHECK(lines.size() * k == B, "GRPO: ", lines.size(), " prompts x ", K, " samples for ",
              B, " rows");
  std::vector<std::vector<int32_t>> ctx;
  std::vector<size_t> row_line;
  for (const size_t l : lines)
    for (size_t s = 0; s < k; ++s) {
      ctx.push_back(prompts.tokens[l]);
      row_line.push_back(l);
    }
  const int32_t eot = tok.eot();
  const std::vector<std::vector<int32_t>> done = complete(policy, ctx, eot, o);
  GrpoRows r;
  r.inputs.assign(B * T, eot);
  r.targets.assign(B * T, -1);
  for (size_t b = 0; b < B; ++b) {
    std::vector<int32_t> seq = ctx[b];
    const size_t p = seq.size();
    seq.insert(seq.end(), done[b].begin(), done[b].end());
    // A completion shorter than its limit ended with <|endoftext|>: learned as its end.
    if (done[b].size() < static_cast<size_t>(o.max_new_tokens)) seq.push_back(eot);
    FP8LM_CHECK(seq.size() <= T + 1, "GRPO row of ", seq.size(), " tokens");
    for (size_t t = 0; t + 1 < seq.size(); ++t) {
      r.inputs[b * T + t] = seq[t];
      if (t + 1 >= p) r.targets[b * T + t] = seq[t + 1];
    }
    r.completions.push_back(tok.decode(done[b]));
  }
  r.rewards = rewards.score(row_line, r.completions);
  r.advantages = group_advantages(r.rewards, k);
  return r;
}

GrpoStats grpo_micro_batch(Gpt& policy, ReferenceModel& ref, const GrpoRows& rows, double clip,
                           double kl, double scale, bool accumulate, const float* old_losses) {
  const size_t T = policy.seq();
  const float* rl = ref.token_losses(rows.inputs.data(), rows.targets.data());
  const std::vector<float> ref_losses(rl, rl + policy.batch() * T);
  GrpoStats st;
  backward_weighted(
      policy, rows.inputs.data(), rows.targets.data(), T,
      [&](size_t r0, size_t n, const float* losses, float* w) {
        grpo_weights(losses + r0, old_losses != nullptr ? old_losses + r0 : nullptr,
                     ref_losses.data() + r0, rows.targets.data() + r0,
                     rows.advantages.data() + r0 / T, n / T, T, clip, kl, scale, w + r0, &st);
      },
      accumulate);
  return st;
}

double grpo_evaluate(Gpt& policy, const GrpoPrompts& prompts, size_t n, int max_new_tokens,
                     const Rewards& rewards, const Tokenizer& tok) {
  n = std::min(n, prompts.lines.size());
  const std::vector<std::vector<int32_t>> ctx(prompts.tokens.begin(),
                                              prompts.tokens.begin() + static_cast<long>(n));
  CompletionOptions o;
  o.max_new_tokens = max_new_tokens;
  o.temperature = 0;
  const std::vector<std::vector<int32_t>> done = complete(policy, ctx, tok.eot(), o);
  std::vector<size_t> lines(n);
  std::vector<std::string> text(n);
  for (size_t i = 0; i < n; ++i) {
    lines[i] = i;
    text[i] = tok.decode(done[i]);
  }
  const std::vector<double> r = rewards.score(lines, text);
  double sum = 0;
  for (const double x : r) sum += x;
  return n == 0 ? 0.0 : sum / static_cast<double>(n);
}

}  // namespace fp8lm
