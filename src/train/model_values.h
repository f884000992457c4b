// A checkpoint's model as FP32 values (sampling, completions, export): its model.safetensors,
// or for a LoRA checkpoint the frozen base with the adapters merged in (docs/post_training.md).
#pragma once

#include <string>

#include "model/params.h"
#include "train/checkpoint.h"

namespace fp8lm {

// The model of checkpoint folder `dir` (trainer.json read as `t`): W + (alpha / r)·A·B on
// each adapted layer of a LoRA checkpoint, summed in FP64.
GptParams load_model_values(const std::string& dir, const TrainerState& t);

// The LoRA base of `t` (checkpoint folder `dir`), checked to be the file the adapters were
// trained on (present, same fingerprint).
std::string lora_base(const TrainerState& t, const std::string& dir);
// file_fingerprint(path) as 16 hex digits (what trainer.json records).
std::string fingerprint_hex(const std::string& path);

// Writes a checkpoint's model (LoRA adapters merged) as a Hugging Face GPT-2 folder:
// out/model.safetensors (F32) and out/config.json, each written atomically; train.init_from
// and Hugging Face's loaders read it.
void export_model(const std::string& checkpoint, const std::string& out);

}  // namespace fp8lm
