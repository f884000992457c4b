// The frozen reference model of DPO and GRPO (docs/post_training.md): the starting weights of
// the run, never updated, stored in the level's narrowest formats — in an FP8 model the
// Linear weights as E4M3 with a per-tensor scale (BF16 under the fine-grained recipes) and
// the rest (embeddings, LayerNorms, biases) as BF16; in a BF16 model all BF16; at fp32 all FP32 (exact references for tests).
// Its bytes count as MemCategory::kFrozen.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/gpt.h"
#include "train/init_from.h"

namespace fp8lm {

class ReferenceModel {
 public:
  // The weights of `from` as `policy` holds them (its shape, tensor-parallel shard and
  // compute mode; no pipeline), for batches of the policy's B × T. `tp`: the policy's
  // tensor-parallel group (every rank makes the same calls).
  ReferenceModel(const PretrainedWeights& from, const Gpt& policy, const Fp8Options& fp8,
                 TpComm* tp);
  // Each position's −log p(target) under the reference [B·T] (0 where target < 0).
  const float* token_losses(const int32_t* tokens, const int32_t* targets);
  // Bytes of the stored weights.
  size_t weight_bytes() const { return bytes_; }

 private:
  std::vector<Tensor> store_;
  std::vector<float> scales_;  // per tensor s (x ≈ q · s); 1 for the unscaled ones
  size_t bytes_ = 0;
  Gpt model_;
};

}  // namespace fp8lm
