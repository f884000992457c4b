// Tensor parallelism inside the model (docs/parallelism.md): a Gpt whose parameters are split
// over a group (param_layout's TpShard) calls these collectives on the group while it runs;
// a Gpt with data-parallel copies (a group of one) shares its FP8 scales through them.
// model/ knows no MPI: the trainer supplies them over its tensor-parallel process group.
#pragma once

#include <cstddef>

#include "model/params.h"
#include "numerics/dtype.h"

namespace fp8lm {

// How a tensor-parallel model communicates.
struct TpOptions {
  // Sequence parallelism: LayerNorms, residuals and the embedding's sum hold B·T / tp rows
  // per rank; the inputs of c_attn and c_fc are gathered (SP → TP) and the outputs of the
  // c_proj layers reduce-scattered (TP → SP) instead of all-reduced.
  bool sequence = true;
  // The SP → TP gathers of c_attn's and c_fc's inputs in BF16 instead of the layer's own
  // input format (e4m3 in fp8 per-tensor recipes, with one scale for the gathered tensor):
  // the baseline the FP8 gather is measured against. fp32 mode gathers f32 either way.
  bool gather_bf16 = false;
  // The TP → SP reduce-scatters and the backward gathers of the residual gradient: bf16 (as
  // the reference implementation ships) or f32. fp32 mode uses f32.
  DType wire = DType::kBF16;
};

class TpComm {
 public:
  virtual ~TpComm() = default;
  virtual TpShard shard() const = 0;
  virtual TpOptions options() const = 0;
  // x[0, n) ← Σ over the group's ranks (FP32).
  virtual void allreduce_sum(float* x, size_t n) = 0;
  // x[0, n) ← max over the group's ranks.
  virtual void allreduce_max(float* x, size_t n) = 0;
  // out[r·n, (r+1)·n) ← rank r's in[0, n), for every rank r.
  virtual void allgather(const float* in, float* out, size_t n) = 0;
  // In place: base[r·bytes, (r+1)·bytes) holds rank r's part of a payload in `format`
  // (named in the byte counts); every rank ends with every part.
  virtual void allgather_parts(void* base, size_t bytes_per_rank, DType format) = 0;
  // out[0, n) ← Σ over the ranks of in[rank·n, (rank+1)·n), with f32 or bf16 payloads.
  virtual void reduce_scatter(const float* in, float* out, size_t n, DType wire) = 0;

  // The ranks that cast parts of the same FP8 tensors — this group and the data-parallel
  // copies of the model — and the max of an amax over them (one scale for all).
  virtual int scaling_ranks() const = 0;
  virtual float max_amax(float amax) = 0;
};

}  // namespace fp8lm
