// What a training step works on, shared by the trainer and the benchmarks: the optimizer
// that owns a GPT's master weights and the views between the two (the model reads the masters, the optimizer reads the model's gradients).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/gpt.h"
#include "optim/adamw.h"
#include "train/init_from.h"

namespace fp8lm {

// AdamW over the parameters of `cfg` in the level's formats, with GPT-2 initial values from
// `seed` (produced one tensor at a time), or the values of `from` (train.init_from). Weight decay on matrices and embeddings only.
// `owned` (O3): the tensors whose states this rank keeps (empty: all). `tp`: this rank's
// tensor-parallel shard of each tensor (the same values one process starts from; narrow
// masters scaled from the whole tensor's amax). `pp`: the tensors of this pipeline stage.
std::unique_ptr<AdamW> make_gpt_optimizer(const GptConfig& cfg, PrecisionLevel level,
                                          const AdamWConfig& acfg, uint64_t seed,
                                          const std::vector<bool>& owned = {}, TpShard tp = {},
                                          PpStage pp = {},
                                          const PretrainedWeights* from = nullptr);

// AdamW over LoRA adapters (Gpt::trainable_specs() of a LoRA model) in the level's formats,
// from LoraInit(seed) (A uniform, B zero).
std::unique_ptr<AdamW> make_lora_optimizer(const std::vector<ParamSpec>& adapters,
                                           PrecisionLevel level, const AdamWConfig& acfg,
                                           uint64_t seed);

// The masters as the model reads them (FP32, or FP16 with their scales): live views, valid
// for the optimizer's life (its updates are seen without a new set_weights).
std::vector<ScaledView> master_views(const AdamW& opt);

// The model's gradients as the optimizer reads them.
std::vector<ScaledView> grad_views(const Gpt& model);

}  // namespace fp8lm
