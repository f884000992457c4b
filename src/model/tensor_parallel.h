// Tensor parallelism inside the model (docs/parallelism.md): a Gpt whose parameters are split
// over a group (param_layout's TpShard) calls these collectives on the group while it runs.
// model/ knows no MPI: the trainer supplies them over its tensor-parallel process group.
#pragma once

#include <cstddef>

#include "model/params.h"

namespace fp8lm {

class TpComm {
 public:
  virtual ~TpComm() = default;
  virtual TpShard shard() const = 0;
  // x[0, n) ← Σ over the group's ranks (FP32).
  virtual void allreduce_sum(float* x, size_t n) = 0;
  // x[0, n) ← max over the group's ranks.
  virtual void allreduce_max(float* x, size_t n) = 0;
  // out[r·n, (r+1)·n) ← rank r's in[0, n), for every rank r.
  virtual void allgather(const float* in, float* out, size_t n) = 0;
};

}  // namespace fp8lm
