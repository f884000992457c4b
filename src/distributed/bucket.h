// Internal to distributed/: bucketing. A list of tensors is treated as one stream of elements and
// cut into windows that fit a staging buffer, so many small tensors share one MPI call and
// a large one is split over several; the number of calls and their sizes depend only on
// the tensor sizes, so every rank makes the same calls.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "core/memory.h"
#include "distributed/mpi_util.h"

namespace fp8lm::dist::detail {

inline constexpr size_t kMinBucketBytes = 64;

// Elements [begin, begin + count) of tensor `tensor` sit at element `offset` of a window.
struct Piece {
  size_t tensor;
  size_t begin;
  size_t count;
  size_t offset;
};

// Staging for windows of at most `capacity` elements of `elem_bytes` each: the smaller of
// what bucket_bytes holds and the whole stream, accounted as communication memory.
class Staging {
 public:
  Staging(size_t bucket_bytes, size_t elem_bytes, size_t total_elems)
      : capacity_(std::min({std::max(bucket_bytes, kMinBucketBytes) / elem_bytes,
                            total_elems, kMaxCount})),
        buf_(capacity_ * elem_bytes, MemCategory::kCommunication) {}
  size_t capacity() const { return capacity_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(buf_.data());
  }

 private:
  size_t capacity_;
  Buffer buf_;
};

// Calls fn(pieces, window_elements) for each window over the tensors listed in `order`
// (indices into numel), in that order.
template <typename Fn>
void for_each_window(std::span<const size_t> numel, std::span<const size_t> order,
                     size_t capacity, Fn&& fn) {
  std::vector<Piece> pieces;
  size_t used = 0;
  for (size_t t : order) {
    for (size_t begin = 0; begin < numel[t];) {
      const size_t count = std::min(numel[t] - begin, capacity - used);
      pieces.push_back({t, begin, count, used});
      used += count;
      begin += count;
      if (used == capacity) {
        fn(std::span<const Piece>(pieces), used);
        pieces.clear();
        used = 0;
      }
    }
  }
  if (used > 0) fn(std::span<const Piece>(pieces), used);
}

// Sum of numel over `order`.
inline size_t total_elements(std::span<const size_t> numel, std::span<const size_t> order) {
  size_t total = 0;
  for (size_t t : order) total += numel[t];
  return total;
}

}  // namespace fp8lm::dist::detail
