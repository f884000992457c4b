// O3 (FP8 ZeRO, docs/numerics.md): each tensor's master and moments live on one owner rank
// (greedy whole-tensor placement), and every rank computes on a replica of the weights.
// Linear weights travel in the recipe's replica format (precision plan, weight_replica):
// E4M3 with the just-in-time per-tensor scale (delayed, jit) or E4M3 in 128×128 blocks with
// their scale grid (block) — exactly what an FP8 GEMM makes of the FP16 master at O2 — or as
// their FP16 masters (mxfp8, whose GEMMs need W in two orientations); the other tensors
// (embeddings, LayerNorm, biases, used in higher precision) as their FP16 masters. After each
// update the owners rebuild their tensors' replicas and everyone gathers them, each tensor
// with its scales; so O3 computes what O2 computes.
#pragma once

#include <vector>

#include "distributed/world.h"
#include "model/gpt.h"
#include "optim/adamw.h"

namespace fp8lm {

// O3's owners of `specs` among `dp` data-parallel ranks (greedy placement of their master +
// moment bytes), as every ZeroReplica of those specs places them.
std::vector<int> zero_owners(const std::vector<ParamSpec>& specs, int dp);

class ZeroReplica {
 public:
  // `linear_mode`: the recipe's weight_replica (kTensor, a block mode, or kNone for FP16).
  // Owners are ranks of `group` (the data-parallel group, of `world_size` ranks, this one
  // `rank`). With tensor parallelism (`tp`) the replicas are this rank's shards and the
  // E4M3 scale of a Linear weight comes from `share` (the max over the shards' amaxes): the
  // ranks of a tensor-parallel group own the same tensors and refresh them together.
  // `pp`: the tensors of this pipeline stage (ZeRO within the stage's data-parallel group).
  ZeroReplica(const GptConfig& cfg, int world_size, int rank,
              ScalingMode linear_mode = ScalingMode::kTensor, TpShard tp = {},
              dist::Group group = {}, AmaxShare share = {}, PpStage pp = {});

  const std::vector<int>& owner() const { return owner_; }
  std::vector<bool> owned() const;
  // Bytes of master + moments placed on each rank.
  const std::vector<int64_t>& rank_state_bytes() const { return rank_bytes_; }

  // Owners rebuild their tensors' replicas from `opt` (built with owned()); then the
  // replicas are gathered from the owners (one broadcast stream per owner, bucketed).
  void refresh(const AdamW& opt);
  // The gathering half of refresh(): every rank receives the owners' replicas.
  void gather();
  // The replicas, for Gpt::set_weights: live views (each refresh updates them in place).
  std::vector<ScaledView> views() const;

 private:
  std::vector<ParamSpec> specs_;
  int rank_;
  dist::Group group_;
  AmaxShare share_;
  std::vector<int> owner_;
  std::vector<int64_t> rank_bytes_;
  std::vector<ScaledTensor> replica_;  // per tensor, in the format above
};

}  // namespace fp8lm
