#include "train/tp_comm.h"

#include <string>

#include "core/check.h"
#include "distributed/collectives.h"

namespace fp8lm {

void GroupTpComm::allreduce_sum(float* x, size_t n) { dist::allreduce_sum(x, n, g_); }

void GroupTpComm::allreduce_max(float* x, size_t n) {
  dist::allreduce_max(x, n, g_, "allreduce_max_f32");
}

float GroupTpComm::max_amax(float amax) {
  dist::allreduce_max(&amax, 1, stage_, "amax");
  return amax;
}

void GroupTpComm::allgather(const float* in, float* out, size_t n) {
  dist::allgather_bytes(in, out, n * sizeof(float), g_, "allgather_f32");
}

void GroupTpComm::allgather_parts(void* base, size_t bytes_per_rank, DType format) {
  const char* kind = format == DType::kE4M3   ? "allgather_e4m3"
                     : format == DType::kE5M2 ? "allgather_e5m2"
                     : format == DType::kBF16 ? "allgather_bf16"
                                              : "allgather_f32";
  const auto* mine = static_cast<const uint8_t*>(base) + static_cast<size_t>(shard_.rank) * bytes_per_rank;
  dist::allgather_bytes(mine, base, bytes_per_rank, g_, kind);
}

void GroupTpComm::reduce_scatter(const float* in, float* out, size_t n, DType wire) {
  FP8LM_CHECK(wire == DType::kF32 || wire == DType::kBF16, "reduce-scatter in ", dtype_name(wire));
  if (wire == DType::kF32)
    dist::reduce_scatter_sum(in, out, n, g_);
  else
    dist::reduce_scatter_sum_bf16(in, out, n, g_);
}

}  // namespace fp8lm
