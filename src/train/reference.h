// Frozen weights (docs/post_training.md): the starting weights of a run that never change —
// the reference model of DPO and GRPO, and LoRA's base — stored in the level's narrowest
// formats: in an FP8 model the Linear weights as E4M3 with a per-tensor scale (BF16 under the
// fine-grained recipes) and the rest (embeddings, LayerNorms, biases) as BF16; in a BF16
// model all BF16; at fp32 all FP32 (exact references for tests). Their bytes count as
// MemCategory::kFrozen.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/gpt.h"
#include "train/init_from.h"

namespace fp8lm {

class FrozenWeights {
 public:
  // The tensors of `from` as a model of `specs` holds them (tensor-parallel shard `shard`)
  // in compute mode `mode`.
  FrozenWeights(const PretrainedWeights& from, const std::vector<ParamSpec>& specs, TpShard shard,
                ComputeMode mode, const Fp8Options& fp8);
  FrozenWeights(const FrozenWeights&) = delete;
  FrozenWeights& operator=(const FrozenWeights&) = delete;
  // One view per spec, for Gpt::set_weights (valid for this object's life).
  const std::vector<ScaledView>& views() const { return views_; }
  size_t bytes() const { return bytes_; }

 private:
  std::vector<Tensor> store_;
  std::vector<float> scales_;  // per tensor s (x ≈ q · s); 1 for the unscaled ones
  std::vector<ScaledView> views_;
  size_t bytes_ = 0;
};

class ReferenceModel {
 public:
  // A model on `weights` (outliving it) shaped as `policy` (its shard and compute mode; no
  // pipeline), for batches of the policy's B × T. `tp`: the policy's tensor-parallel group
  // (every rank makes the same calls).
  ReferenceModel(const FrozenWeights& weights, const Gpt& policy, const Fp8Options& fp8,
                 TpComm* tp);
  // Each position's −log p(target) under the reference [B·T] (0 where target < 0).
  const float* token_losses(const int32_t* tokens, const int32_t* targets);

 private:
  Gpt model_;
};

}  // namespace fp8lm
