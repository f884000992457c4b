// FP32 and BF16 gradient averaging (distributed/collectives.h).
#include "distributed/collectives.h"

#include <cstring>
#include <vector>

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

void allreduce_mean_f32(std::span<const F32Span> tensors, size_t bucket_bytes, const char* kind) {
  if (size() == 1) return;
  std::vector<size_t> numel, order;
  describe(tensors, numel, order);
  detail::Staging staging(bucket_bytes, sizeof(float), detail::total_elements(numel, order));
  float* buf = staging.as<float>();
  const float inv_n = 1.0f / static_cast<float>(size());
  detail::for_each_window(numel, order, staging.capacity(), [&](auto pieces, size_t n) {
    for (const detail::Piece& p : pieces)
      std::memcpy(buf + p.offset, tensors[p.tensor].data + p.begin, p.count * sizeof(float));
    detail::allreduce(buf, n, MPI_FLOAT, MPI_SUM, kind);
    for (const detail::Piece& p : pieces)
      kernels::dequantize(tensors[p.tensor].data + p.begin, buf + p.offset, DType::kF32, p.count,
                          inv_n);
  });
}

void allreduce_mean_bf16(std::span<const F32Span> tensors, size_t bucket_bytes) {
  if (size() == 1) return;
  std::vector<size_t> numel, order;
  describe(tensors, numel, order);
  detail::Staging staging(bucket_bytes, sizeof(uint16_t), detail::total_elements(numel, order));
  uint16_t* buf = staging.as<uint16_t>();
  const float inv_n = 1.0f / static_cast<float>(size());
  detail::for_each_window(numel, order, staging.capacity(), [&](auto pieces, size_t n) {
    for (const detail::Piece& p : pieces)
      kernels::quantize(buf + p.offset, DType::kBF16, tensors[p.tensor].data + p.begin, p.count,
                        1.0f, /*saturate=*/false);
    detail::allreduce(buf, n, detail::bf16_type(), detail::bf16_sum(), "allreduce_bf16");
    for (const detail::Piece& p : pieces)
      kernels::dequantize(tensors[p.tensor].data + p.begin, buf + p.offset, DType::kBF16,
                          p.count, inv_n);
  });
}

}  // namespace fp8lm::dist
