// Completing prompts with a model: greedy or sampled continuations of many prompts at once,
// and a checkpoint's completions of a JSONL prompt file with their exact-match accuracy
// (docs/post_training.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/gpt.h"

namespace fp8lm {

struct CompletionOptions {
  int max_new_tokens = 16;
  double temperature = 0;  // 0: greedy
  uint64_t seed = 1;       // prompt i samples from its own stream (seed, i): batching-independent
};

// Continues each prompt (token ids) until `stop` or max_new_tokens, B prompts per forward
// (the model's batch; its T the context window, the last T tokens when longer). Returns the
// new tokens of each prompt, `stop` excluded.
std::vector<std::vector<int32_t>> complete(Gpt& model, const std::vector<std::vector<int32_t>>& prompts,
                                           int32_t stop, const CompletionOptions& o);
// The same on the FP32 values of `params` with a key/value cache (model/decoder.h), `batch`
// prompts at a time, the window model.seq_len: each new token costs one pass over the
// weights instead of a whole window's forward. Only a row whose context outgrows the window
// is recomputed (its last seq_len tokens at positions 0 …, as above).
std::vector<std::vector<int32_t>> complete(const GptParams& params,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           int32_t stop, const CompletionOptions& o, size_t batch);

struct TaskScore {
  size_t prompts = 0;
  size_t with_reference = 0;  // lines that gave a "response" or "answer"
  size_t exact = 0;           // completions equal to it, character for character
  double accuracy() const {
    return with_reference == 0 ? 0.0 : static_cast<double>(exact) / static_cast<double>(with_reference);
  }
};

// Completes every prompt of the JSONL file `prompts` (data/sft_jsonl.h: read_prompts_jsonl)
// with the checkpoint's FP32 model on its model.safetensors, `batch` prompts at a time;
// writes {"prompt", "completion"[, "reference", "match"]} per line to `out` (atomically;
// nothing when empty) and returns the score.
TaskScore complete_checkpoint(const std::string& checkpoint, const std::string& prompts,
                              const std::string& out, const CompletionOptions& o, int batch);

}  // namespace fp8lm
