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
// (no full-size copy).
std::string save_checkpoint(const std::string& out_dir, int64_t step, const GptConfig& cfg,
                            const AdamW& opt, const nlohmann::json& trainer);

// A checkpoint folder, or a run folder (meaning its latest complete checkpoint).
std::string resolve_checkpoint(const std::string& path);

// Reads trainer.json of a checkpoint folder (errors name the file).
nlohmann::json read_trainer_json(const std::string& dir);
// Loads optimizer.safetensors into `opt` (whose shapes and level must match).
void load_optimizer(const std::string& dir, AdamW& opt);

nlohmann::json scaling_to_json(const ScalingMeta& m);
void scaling_from_json(const nlohmann::json& j, ScalingMeta& m, const std::string& where);

}  // namespace fp8lm
