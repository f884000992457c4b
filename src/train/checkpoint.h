// Checkpoints: checkpoints/step-N/ with model.safetensors (Hugging Face GPT-2 names, F32
// master values), optimizer.safetensors (states in their native dtypes, with scales) and
// trainer.json (step, configuration, scaling state). A checkpoint is written into a hidden
// temporary folder and renamed into place only when complete, so a crash mid-write never
// touches the last complete checkpoint.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/params.h"
#include "optim/adamw.h"
#include "tensor/scaling.h"

namespace fp8lm {

// Writes out_dir/checkpoints/step-N atomically; returns its path. With the environment
// variable FP8LM_TEST_CRASH_IN_CHECKPOINT set (tests), the process aborts after the first
// file, to exercise interrupted checkpoints.
// model.safetensors holds the optimizer's master values converted to F32 tensor by tensor
// (no full-size copy). With `owner` (O3, on rank 0), the states of tensors other ranks own
// are received from them one at a time while writing: those ranks call
// send_checkpoint_states at the same step. The format does not depend on the world size.
std::string save_checkpoint(const std::string& out_dir, int64_t step, const GptConfig& cfg,
                            const AdamW& opt, const nlohmann::json& trainer,
                            const std::vector<int>& owner = {});
void send_checkpoint_states(const AdamW& opt, const std::vector<int>& owner);

// A checkpoint folder, or a run folder (meaning its latest complete checkpoint).
std::string resolve_checkpoint(const std::string& path);

// Reads trainer.json of a checkpoint folder (errors name the file).
nlohmann::json read_trainer_json(const std::string& dir);
// The model configuration recorded in trainer.json (`where`: the checkpoint folder).
GptConfig model_config_of(const nlohmann::json& trainer, const std::string& where);
// Loads optimizer.safetensors into `opt` (shapes and state formats must match; O2 and O3
// checkpoints are interchangeable); O3 loads only the tensors this rank owns.
void load_optimizer(const std::string& dir, AdamW& opt);

nlohmann::json scaling_to_json(const ScalingMeta& m);
void scaling_from_json(const nlohmann::json& j, ScalingMeta& m, const std::string& where);

}  // namespace fp8lm
