// O3 (FP8 ZeRO, docs/numerics.md): each tensor's master and moments live on one owner rank
// (greedy whole-tensor placement), and every rank computes on a replica of the weights:
// Linear weights as E4M3 with their just-in-time scale — exactly what an FP8 GEMM reads
// from the FP16 master at O2 — and the others (embeddings, LayerNorm, biases, used in higher
// precision) as their FP16 masters with scales. After each update the owners rebuild their
// tensors' replicas and everyone gathers them, so O3 computes what O2 computes.
// Under fine-grained scaling (block, mxfp8) the Linear weights are replicated as their FP16
// masters instead: the layers quantize them per block just in time, as at O2.
#pragma once

#include <vector>

#include "model/gpt.h"
#include "optim/adamw.h"

namespace fp8lm {

class ZeroReplica {
 public:
  ZeroReplica(const GptConfig& cfg, int world_size, int rank, bool fp8_weights = true);

  const std::vector<int>& owner() const { return owner_; }
  std::vector<bool> owned() const;
  // Bytes of master + moments placed on each rank.
  const std::vector<int64_t>& rank_state_bytes() const { return rank_bytes_; }

  // Owners rebuild their tensors' replicas from `opt` (built with owned()); then the
  // replicas are gathered from the owners (one broadcast per owner, bucketed).
  void refresh(const AdamW& opt);
  // The gathering half of refresh(): every rank receives the owners' replicas.
  void gather();
  // The replicas, for Gpt::set_weights (valid until the next refresh).
  std::vector<ParamRef> refs() const;

 private:
  std::vector<ParamSpec> specs_;
  int rank_;
  std::vector<int> owner_;
  std::vector<int64_t> rank_bytes_;
  bool fp8_weights_;              // Linear weights travel as E4M3 (else as FP16 masters)
  std::vector<Tensor> data_;      // e4m3 (Linear weights) or f16
  std::vector<float> scale_inv_;  // per tensor
  std::vector<float> w8_scale_;   // Linear weights: the JIT scale (kept when amax is 0)
};

}  // namespace fp8lm
