// The training loop: data → GPT forward/backward in the level's compute mode (micro-batches
// accumulated) → precision-decoupled AdamW with global-norm clipping and a warm-up + cosine
// learning rate → periodic evaluation and checkpoints; metrics.jsonl and summary.json.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "train/config.h"
#include "train/inference.h"  // evaluation and sampling of checkpoints

namespace fp8lm {

struct TrainResult {
  double final_train_loss = 0;
  double final_val_loss = 0;  // GRPO: the mean validation reward
  int64_t steps = 0;
};

// Runs `cfg` (resuming from `resume`, a checkpoint or run folder, when not empty) in
// cfg.out_dir; `overwrite` lets a fresh run replace a run already in that folder.
TrainResult train(const TrainConfig& cfg, const std::string& resume, bool overwrite = false);

}  // namespace fp8lm
