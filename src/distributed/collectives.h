// Data-parallel gradient averaging for the baselines: FP32 gradients all-reduced as FP32
// or as BF16 on the wire (2 bytes/element, summed in float32 per combine), then × 1/N.
// FP8 tensors travel as MutableScaledView (payload and live scale, replaced in place). Tensors are bucketed: small ones
// share an MPI call through a staging buffer of at most bucket_bytes; large ones are split.
// With one rank there is nothing to average: buffers are left as they are, no MPI call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "distributed/world.h"
#include "tensor/scaled_view.h"

namespace fp8lm::dist {

inline constexpr size_t kDefaultBucketBytes = size_t{16} << 20;

// numel floats at data.
struct F32Span {
  float* data;
  size_t numel;
};

// tensors[i] ← (Σ over the ranks of g) · (1/N): MPI_SUM on MPI_FLOAT. `kind` names the
// traffic in the byte counts (world.h comm_bytes).
void allreduce_mean_f32(std::span<const F32Span> tensors,
                        size_t bucket_bytes = kDefaultBucketBytes,
                        const char* kind = "allreduce_f32", const Group& g = {});

// tensors[i] ← f32(Σ over ranks of bf16(tensors[i])) · (1/N): each rank rounds to BF16
// (nearest even, IEEE overflow), the sum runs on BF16 payloads, partial sums rounded to BF16.
void allreduce_mean_bf16(std::span<const F32Span> tensors,
                         size_t bucket_bytes = kDefaultBucketBytes, const Group& g = {});

// The tensor-parallel collectives (docs/parallelism.md); with a one-rank group nothing moves.
// x[0, n) ← Σ over the ranks of g (FP32 sums; the order is MPI's).
void allreduce_sum(float* x, size_t n, const Group& g, const char* kind = "allreduce_f32");
// x[0, n) ← max over the ranks of g.
void allreduce_max(float* x, size_t n, const Group& g, const char* kind = "scalar");
// out[r·bytes, (r+1)·bytes) ← rank r's `in` (bytes each), for every rank r of g; `in` may
// be this rank's part of `out` (in place).
void allgather_bytes(const void* in, void* out, size_t bytes, const Group& g, const char* kind);
// out[0, n) ← Σ over the ranks of in[rank·n, (rank+1)·n), FP32 sums.
void reduce_scatter_sum(const float* in, float* out, size_t n, const Group& g,
                        const char* kind = "reduce_scatter_f32");
// The same with BF16 payloads: each rank rounds its input to BF16 and partial sums stay
// BF16 (the BF16 sum operator); out is the FP32 value of the BF16 result.
void reduce_scatter_sum_bf16(const float* in, float* out, size_t n, const Group& g);

}  // namespace fp8lm::dist
