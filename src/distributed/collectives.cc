// FP32 and BF16 gradient averaging (distributed/collectives.h).
#include "distributed/collectives.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "distributed/bucket.h"
#include "distributed/world.h"
#include "kernels/cast.h"

namespace fp8lm::dist {
namespace {

// numel of each tensor, and the order 0..n-1.
void describe(std::span<const F32Span> tensors, std::vector<size_t>& numel,
              std::vector<size_t>& order) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    numel.push_back(tensors[i].numel);
    order.push_back(i);
  }
}

}  // namespace

void allreduce_mean_f32(std::span<const F32Span> tensors, size_t bucket_bytes, const char* kind,
                        const Group& g) {
  if (g.size() == 1) return;
  std::vector<size_t> numel, order;
  describe(tensors, numel, order);
  detail::Staging staging(bucket_bytes, sizeof(float), detail::total_elements(numel, order));
  float* buf = staging.as<float>();
  const float inv_n = 1.0f / static_cast<float>(g.size());
  detail::for_each_window(numel, order, staging.capacity(), [&](auto pieces, size_t n) {
    for (const detail::Piece& p : pieces)
      std::memcpy(buf + p.offset, tensors[p.tensor].data + p.begin, p.count * sizeof(float));
    detail::allreduce(buf, n, MPI_FLOAT, MPI_SUM, kind, g);
    for (const detail::Piece& p : pieces)
      kernels::dequantize(tensors[p.tensor].data + p.begin, buf + p.offset, DType::kF32, p.count,
                          inv_n);
  });
}

void allreduce_mean_bf16(std::span<const F32Span> tensors, size_t bucket_bytes, const Group& g) {
  if (g.size() == 1) return;
  std::vector<size_t> numel, order;
  describe(tensors, numel, order);
  detail::Staging staging(bucket_bytes, sizeof(uint16_t), detail::total_elements(numel, order));
  uint16_t* buf = staging.as<uint16_t>();
  const float inv_n = 1.0f / static_cast<float>(g.size());
  detail::for_each_window(numel, order, staging.capacity(), [&](auto pieces, size_t n) {
    for (const detail::Piece& p : pieces)
      kernels::quantize(buf + p.offset, DType::kBF16, tensors[p.tensor].data + p.begin, p.count,
                        1.0f, /*saturate=*/false);
    detail::allreduce(buf, n, detail::bf16_type(), detail::bf16_sum(), "allreduce_bf16", g);
    for (const detail::Piece& p : pieces)
      kernels::dequantize(tensors[p.tensor].data + p.begin, buf + p.offset, DType::kBF16,
                          p.count, inv_n);
  });
}

void allreduce_sum(float* x, size_t n, const Group& g, const char* kind) {
  if (g.size() == 1 || n == 0) return;
  for (size_t off = 0; off < n; off += detail::kMaxCount)
    detail::allreduce(x + off, std::min(detail::kMaxCount, n - off), MPI_FLOAT, MPI_SUM, kind, g);
}

void allreduce_max(float* x, size_t n, const Group& g, const char* kind) {
  if (g.size() == 1 || n == 0) return;
  for (size_t off = 0; off < n; off += detail::kMaxCount)
    detail::allreduce(x + off, std::min(detail::kMaxCount, n - off), MPI_FLOAT, MPI_MAX, kind, g);
}

void allgather_bytes(const void* in, void* out, size_t bytes, const Group& g, const char* kind) {
  if (g.size() == 1) {
    if (bytes > 0 && out != in) std::memcpy(out, in, bytes);
    return;
  }
  FP8LM_CHECK(bytes <= detail::kMaxCount, "allgather of ", bytes, " bytes per rank");
  // In place when `in` is this rank's part of `out`.
  const bool in_place = in == static_cast<const uint8_t*>(out) + static_cast<size_t>(g.rank()) * bytes;
  detail::allgather(in_place ? MPI_IN_PLACE : in, out, bytes, MPI_BYTE, kind, g);
}

void reduce_scatter_sum(const float* in, float* out, size_t n, const Group& g, const char* kind) {
  if (g.size() == 1) {
    if (n > 0 && out != in) std::memcpy(out, in, n * sizeof(float));
    return;
  }
  FP8LM_CHECK(n <= detail::kMaxCount, "reduce-scatter of ", n, " elements per rank");
  detail::reduce_scatter(in, out, n, MPI_FLOAT, MPI_SUM, kind, g);
}

void reduce_scatter_sum_bf16(const float* in, float* out, size_t n, const Group& g) {
  const size_t N = static_cast<size_t>(g.size());
  std::vector<uint16_t> wire(n * N), result(n);
  kernels::quantize(wire.data(), DType::kBF16, in, n * N, 1.0f, /*saturate=*/false);
  if (N == 1) {
    result.assign(wire.begin(), wire.end());
  } else {
    FP8LM_CHECK(n <= detail::kMaxCount, "reduce-scatter of ", n, " elements per rank");
    detail::reduce_scatter(wire.data(), result.data(), n, detail::bf16_type(), detail::bf16_sum(),
                           "reduce_scatter_bf16", g);
  }
  kernels::dequantize(out, result.data(), DType::kBF16, n, 1.0f);
}

}  // namespace fp8lm::dist
