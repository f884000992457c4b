// Data-parallel gradient averaging for the baselines: FP32 gradients all-reduced as FP32
// or as BF16 on the wire (2 bytes/element, summed in float32 per combine), then × 1/N.
// FP8 tensors travel as MutableScaledView (payload and live scale, replaced in place). Tensors are bucketed: small ones
// share an MPI call through a staging buffer of at most bucket_bytes; large ones are split.
// With one rank there is nothing to average: buffers are left as they are, no MPI call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "tensor/scaled_view.h"

namespace fp8lm::dist {

inline constexpr size_t kDefaultBucketBytes = size_t{16} << 20;

// numel floats at data.
struct F32Span {
  float* data;
  size_t numel;
};

// tensors[i] ← (Σ over ranks) · (1/N): MPI_SUM on MPI_FLOAT. `kind` names the traffic in
// the byte counts (world.h comm_bytes).
void allreduce_mean_f32(std::span<const F32Span> tensors,
                        size_t bucket_bytes = kDefaultBucketBytes,
                        const char* kind = "allreduce_f32");

// tensors[i] ← f32(Σ over ranks of bf16(tensors[i])) · (1/N): each rank rounds to BF16
// (nearest even, IEEE overflow), the sum runs on BF16 payloads, partial sums rounded to BF16.
void allreduce_mean_bf16(std::span<const F32Span> tensors,
                         size_t bucket_bytes = kDefaultBucketBytes);

}  // namespace fp8lm::dist
