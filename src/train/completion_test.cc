// Completions: the greedy token is the argmax of the model's logits at the prompt's last
// position; results do not depend on how prompts are batched (sampling included); the stop
// token ends a completion; prompts longer than the window keep their last T tokens; the
// key/value-cache path completes as the whole-window forward does.
#include "train/completion.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "model/params.h"

namespace fp8lm {
namespace {

GptConfig tiny_config() {
  GptConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 32;
  c.seq_len = 16;
  c.vocab_size = 50;
  return c;
}

TEST(Completion, GreedyIsTheArgmaxAndBatchingChangesNothing) {
  GptParams params(tiny_config());
  params.init_gpt2(9);
  const size_t T = 16, V = 50;
  Gpt one(params, ComputeMode::kF32, 1, T, {}, false);
  Gpt three(params, ComputeMode::kF32, 3, T, {}, false);
  std::vector<std::vector<int32_t>> prompts;
  for (int n = 1; n <= 5; ++n) {
    std::vector<int32_t> p;
    for (int k = 0; k < 2 * n; ++k) p.push_back((7 * n + 3 * k) % 49);
    prompts.push_back(p);
  }
  prompts.push_back(std::vector<int32_t>(20, 11));  // longer than the window
  CompletionOptions o;
  o.max_new_tokens = 6;
  const int32_t stop = 49;
  const auto a = complete(one, prompts, stop, o), b = complete(three, prompts, stop, o);
  EXPECT_EQ(a, b);
  // The first greedy token by hand: the argmax at the last position of the prompt's window.
  std::vector<float> logits(T * V);
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> w(T, stop);
    const size_t len = std::min(prompts[i].size(), T);
    std::copy(prompts[i].end() - static_cast<long>(len), prompts[i].end(), w.begin());
    one.logits(w.data(), logits.data());
    const float* row = logits.data() + (len - 1) * V;
    const int32_t want = static_cast<int32_t>(std::max_element(row, row + V) - row);
    if (want == stop) {
      EXPECT_TRUE(a[i].empty()) << i;
    } else {
      ASSERT_FALSE(a[i].empty()) << i;
      EXPECT_EQ(a[i][0], want) << i;
      EXPECT_LE(a[i].size(), 6u);
    }
  }
  // The stop token ends a completion before it starts: make prompt 0's first token the stop.
  if (!a[0].empty()) {
    EXPECT_TRUE(complete(one, {prompts[0]}, a[0][0], o)[0].empty());
  }
  // Sampling: each prompt draws from its own stream, however the prompts are batched.
  o.temperature = 1.0;
  o.seed = 3;
  const auto sa = complete(one, prompts, stop, o), sb = complete(three, prompts, stop, o);
  EXPECT_EQ(sa, sb);
  o.seed = 4;
  EXPECT_NE(complete(three, prompts, stop, o), sa);
}

TEST(Completion, KeyValueCacheCompletesAsTheWholeWindow) {
  GptParams params(tiny_config());
  params.init_gpt2(10);
  Gpt model(params, ComputeMode::kF32, 2, 16, {}, false);
  std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4}, {5, 6, 7, 8, 9, 10, 11}};
  prompts.push_back(std::vector<int32_t>(14, 12));  // slides out of the window while completing
  prompts.push_back(std::vector<int32_t>(20, 13));  // longer than the window from the start
  CompletionOptions o;
  o.max_new_tokens = 9;
  const int32_t stop = 49;
  size_t slid = 0;
  for (const double temperature : {0.0, 1.0}) {
    o.temperature = temperature;
    const auto whole = complete(model, prompts, stop, o);
    for (const size_t batch : {size_t{1}, size_t{3}, size_t{8}})
      EXPECT_EQ(complete(params, prompts, stop, o, batch), whole) << temperature << " " << batch;
    slid += prompts[3].size() + whole[3].size() > 16;
    // Short prompts only: the cache holds their windows and new tokens, not seq_len positions.
    const std::vector<std::vector<int32_t>> short_prompts(prompts.begin(), prompts.begin() + 2);
    EXPECT_EQ(complete(params, short_prompts, stop, o, 2), complete(model, short_prompts, stop, o));
    size_t made = 0;
    for (const auto& c : whole) made += c.size();
    EXPECT_GT(made, 10u);  // completions long enough to compare
  }
  EXPECT_GT(slid, 0u);  // the window slid in at least one run
}

}  // namespace
}  // namespace fp8lm
