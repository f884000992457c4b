// The model's tensor-parallel collectives (model/tensor_parallel.h) over an MPI process group:
// the grid's tp group, byte counts under "tp.KIND" (distributed/world.h).
#pragma once

#include "distributed/grid.h"
#include "model/tensor_parallel.h"

namespace fp8lm {

class GroupTpComm final : public TpComm {
 public:
  GroupTpComm(const dist::Grid& g, TpOptions options)
      : g_(g.tp_group), stage_(g.stage_group), shard_{g.tp_rank, g.tp}, options_(options) {}
  TpShard shard() const override { return shard_; }
  TpOptions options() const override { return options_; }
  void allreduce_sum(float* x, size_t n) override;
  void allreduce_max(float* x, size_t n) override;
  void allgather(const float* in, float* out, size_t n) override;
  void allgather_parts(void* base, size_t bytes_per_rank, DType format) override;
  void reduce_scatter(const float* in, float* out, size_t n, DType wire) override;
  // The ranks of this pipeline stage (tp × dp; the world without a pipeline).
  int scaling_ranks() const override { return stage_.size(); }
  float max_amax(float amax) override;

 private:
  dist::Group g_, stage_;
  TpShard shard_;
  TpOptions options_;
};

}  // namespace fp8lm
