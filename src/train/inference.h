// Using a model after (or while) training it: validation loss over fixed windows, and a
// checkpoint's loss and generated text.
#pragma once

#include <cstdint>
#include <string>

#include <memory>

#include "data/loader.h"
#include "data/tokenizer.h"
#include "train/checkpoint.h"
#include "model/gpt.h"

namespace fp8lm {

// Mean token loss over the first `batches` evaluation batches of `data` (made for the
// model's B and T): for a token file batch j is tokens [j·B·T, j·B·T + B·T + 1); for an
// example file the mean over the target tokens. Leaves the model's training state alone.
double evaluate(Gpt& model, const DataSource& data, int batches);

// Mean token loss of a checkpoint over `batches` sequential evaluation batches of `data`
// (batch_size/seq_len from the checkpoint when 0), computed as trained: in the level's
// precision on the optimizer's master weights, with the saved scaling state (the value
// training logged as val_loss for the same windows).
double evaluate_checkpoint(const std::string& checkpoint, const std::string& data, int batches,
                           int batch_size, int seq_len);

// The tokenizer a checkpoint was trained with (trainer.json), checked against its vocabulary.
std::unique_ptr<Tokenizer> checkpoint_tokenizer(const std::string& dir, const TrainerState& t);

// Text generated from a checkpoint after `prompt` (an FP32 model on its model.safetensors).
std::string sample_checkpoint(const std::string& checkpoint, const std::string& prompt, int tokens,
                              double temperature, uint64_t seed);

}  // namespace fp8lm
