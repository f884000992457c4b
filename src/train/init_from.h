// Starting weights for a run (train.init_from): an fp8lm checkpoint or run folder, or a
// Hugging Face GPT-2 model.safetensors as published (docs/post_training.md). The model's
// shape comes from the file; the optimizer's states start fresh.
#pragma once

#include <string>
#include <vector>

#include "model/config.h"
#include "tensor/safetensors.h"

namespace fp8lm {

class PretrainedWeights {
 public:
  // Opens and checks `from` completely: every tensor the model needs is present with its
  // shape and a float dtype, nothing else is (Hugging Face's attention-mask buffers and a
  // tied lm_head.weight are allowed), and the configuration beside it (fp8lm: trainer.json;
  // Hugging Face: config.json when present) describes a GPT-2 fp8lm computes. `seq_len`:
  // the positions to train on (0: all of wpe's rows); wpe keeps its first seq_len rows.
  // Errors name the file and the tensor or key.
  PretrainedWeights(const std::string& from, int seq_len);

  const GptConfig& config() const { return cfg_; }
  const std::string& path() const { return file_.path(); }
  // The FP32 values of the tensor named `name` (fp8lm's names) in the model's whole shape
  // (wte: padded_vocab() rows, the padding zero); every value finite or an Error.
  void read(const std::string& name, float* out) const;

 private:
  const SafetensorsEntry& entry(const std::string& name) const;

  // Where the configuration is (set while file_ is opened: the path is resolved once).
  std::string trainer_dir_, hf_config_;
  SafetensorsFile file_;
  std::string prefix_;  // "" or "transformer."
  GptConfig cfg_;
};

// The model configuration of `from` (the shape PretrainedWeights would load), without
// reading its values.
GptConfig pretrained_config(const std::string& from, int seq_len);

}  // namespace fp8lm
