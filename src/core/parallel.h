// Static, deterministic splitting of a range over the OpenMP threads: chunk c always covers
// the same elements for a given thread count, so reductions combine in a fixed order.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>

namespace fp8lm {

// The most threads a run may ask for: far above any CPU's cores, far below what makes the
// OpenMP runtime fail (100000 crashed it) or spin for minutes on a small machine.
inline constexpr int kMaxThreads = 1024;

// Threads the kernels use (OpenMP's max threads; set with set_num_threads). A kernel called
// from inside a parallel region (a GEMM per attention head) runs on its calling thread.
inline int num_threads() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }
inline void set_num_threads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }

// Number of chunks parallel_for splits n items into, for chunks of at least min_chunk.
inline size_t chunk_count(size_t n, size_t min_chunk) {
  const size_t by_size = (n + min_chunk - 1) / min_chunk;
  return std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(num_threads()), by_size));
}

// Calls fn(chunk, begin, end) for each chunk; boundaries are multiples of `align` (except n).
// fn must not throw.
template <typename Fn>
void parallel_for(size_t n, size_t min_chunk, size_t align, Fn&& fn) {
  const size_t chunks = chunk_count(n, min_chunk);
  if (chunks == 1) {
    fn(size_t{0}, size_t{0}, n);
    return;
  }
  const size_t per = ((n + chunks - 1) / chunks + align - 1) / align * align;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(chunks))
  for (size_t c = 0; c < chunks; ++c) {
    const size_t begin = std::min(n, c * per);
    const size_t end = std::min(n, begin + per);
    fn(c, begin, end);
  }
}

// Calls fn(block, begin, end) for the blocks [b·block, min(n, (b+1)·block)) of n items, the
// blocks spread over the threads. Unlike parallel_for's chunks the blocks do not depend on the
// thread count, so partial sums per block, added in block order, are the same bits on any
// number of threads.
template <typename Fn>
void for_fixed_blocks(size_t n, size_t block, Fn&& fn) {
  const size_t blocks = (n + block - 1) / block;
  parallel_for(blocks, 1, 1, [&](size_t, size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b) fn(b, b * block, std::min(n, (b + 1) * block));
  });
}

}  // namespace fp8lm
