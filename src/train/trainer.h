// The training loop: data → GPT forward/backward in the level's compute mode (micro-batches
// accumulated) → precision-decoupled AdamW with global-norm clipping and a warm-up + cosine
// learning rate → periodic evaluation and checkpoints; metrics.jsonl and summary.json.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "train/config.h"

namespace fp8lm {

struct TrainResult {
  double final_train_loss = 0;
  double final_val_loss = 0;
  int64_t steps = 0;
};

// Runs `cfg` (resuming from `resume`, a checkpoint or run folder, when not empty).
TrainResult train(const TrainConfig& cfg, const std::string& resume);

// Mean token loss of a checkpoint over `batches` sequential evaluation batches of `data`
// (batch_size/seq_len from the checkpoint when 0), computed as trained: in the level's
// precision on the optimizer's master weights, with the saved scaling state (the value
// training logged as val_loss for the same windows).
double evaluate_checkpoint(const std::string& checkpoint, const std::string& data, int batches,
                           int batch_size, int seq_len);

// Text generated from a checkpoint after `prompt`.
std::string sample_checkpoint(const std::string& checkpoint, const std::string& prompt, int tokens,
                              double temperature, uint64_t seed);

}  // namespace fp8lm
