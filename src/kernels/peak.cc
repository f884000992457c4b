#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/peak.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Runs `iters` rounds of 12 independent FMA chains (enough to cover FMA latency × ports on
// current x86 cores); returns a value that depends on every chain so nothing is elided.
// Floats per round: 12 · lanes.
float FmaChains(uint64_t iters, float seed, size_t* lanes) {
  const hn::ScalableTag<float> d;
  *lanes = hn::Lanes(d);
  const auto m = hn::Set(d, 0.999999f), a = hn::Set(d, 1e-7f);
  // Distinct starting values: identical chains could be merged by the compiler.
  auto c0 = hn::Set(d, seed), c1 = hn::Set(d, seed + 1), c2 = hn::Set(d, seed + 2),
       c3 = hn::Set(d, seed + 3), c4 = hn::Set(d, seed + 4), c5 = hn::Set(d, seed + 5),
       c6 = hn::Set(d, seed + 6), c7 = hn::Set(d, seed + 7), c8 = hn::Set(d, seed + 8),
       c9 = hn::Set(d, seed + 9), c10 = hn::Set(d, seed + 10), c11 = hn::Set(d, seed + 11);
  for (uint64_t i = 0; i < iters; ++i) {
    c0 = hn::MulAdd(c0, m, a);
    c1 = hn::MulAdd(c1, m, a);
    c2 = hn::MulAdd(c2, m, a);
    c3 = hn::MulAdd(c3, m, a);
    c4 = hn::MulAdd(c4, m, a);
    c5 = hn::MulAdd(c5, m, a);
    c6 = hn::MulAdd(c6, m, a);
    c7 = hn::MulAdd(c7, m, a);
    c8 = hn::MulAdd(c8, m, a);
    c9 = hn::MulAdd(c9, m, a);
    c10 = hn::MulAdd(c10, m, a);
    c11 = hn::MulAdd(c11, m, a);
  }
  const auto s = hn::Add(hn::Add(hn::Add(c0, c1), hn::Add(c2, c3)),
                         hn::Add(hn::Add(hn::Add(c4, c5), hn::Add(c6, c7)),
                                 hn::Add(hn::Add(c8, c9), hn::Add(c10, c11))));
  return hn::GetLane(s);
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "kernels/gemm_dot.h"
#include "kernels/peak.h"
#include "kernels/simd.h"

namespace fp8lm {
HWY_EXPORT(FmaChains);

namespace kernels {

namespace {

// GFLOP/s of `threads` threads each running rounds(iters, seed) for about `seconds`, where one
// round does `flops_per_round` FLOPs: the iteration count is calibrated on one thread, then
// all threads run at once and the slowest sets the time.
template <class Rounds>
double measure_peak(int threads, double seconds, double flops_per_round, const Rounds& rounds) {
  uint64_t iters = 1 << 16;
  double t = 0;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    volatile float sink = rounds(iters, 1.0f);
    (void)sink;
    t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (t > seconds / 4 || iters > (uint64_t{1} << 40)) break;
    iters *= 2;
  }
  iters = static_cast<uint64_t>(static_cast<double>(iters) * seconds / t) + 1;
  // The best of a few runs: on a shared machine a run can only lose time (a preempted
  // thread, a neighbour's burst), and one unlucky run set a peak 20% low.
  constexpr int kRuns = 5;
  double best = std::numeric_limits<double>::infinity();
  std::vector<double> secs(static_cast<size_t>(threads));
  for (int run = 0; run < kRuns; ++run) {
#pragma omp parallel num_threads(threads)
    {
      const int tid = omp_get_thread_num();
      const auto t0 = std::chrono::steady_clock::now();
      volatile float sink = rounds(iters, 1.0f + static_cast<float>(tid));
      (void)sink;
      secs[static_cast<size_t>(tid)] =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    best = std::min(best, *std::max_element(secs.begin(), secs.end()));
  }
  return flops_per_round * static_cast<double>(iters) * threads / best / 1e9;
}

}  // namespace

double measure_fma_peak_gflops(int threads, double seconds) {
  size_t lanes = 0;
  HWY_DYNAMIC_DISPATCH(FmaChains)(1, 1.0f, &lanes);
  return measure_peak(threads, seconds, 2.0 * 12.0 * static_cast<double>(lanes),
                      [](uint64_t iters, float seed) {
                        size_t l = 0;
                        return HWY_DYNAMIC_DISPATCH(FmaChains)(iters, seed, &l);
                      });
}

double measure_bf16_dot_peak_gflops(int threads, double seconds) {
  if (!simd::bf16_dot_active()) return 0.0;
  return measure_peak(threads, seconds, gemm_detail::kDotChainFlops, gemm_detail::dot_chains);
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
