// Micro-benchmarks of causal attention, forward and backward, on the dispatched target.
// GFLOP/s counts the causal products only: T·(T+1)/2 query-key pairs per head, 2·HS FLOPs
// per pair and product — two products forward (Q·Kᵀ, P·V), five backward (Q·Kᵀ recomputed,
// dO·Vᵀ, dS·K, dSᵀ·Q, Pᵀ·dO).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/nn.h"

namespace {

struct Shape {
  size_t B, T, C, NH;
};

Shape shape_of(const benchmark::State& state) {
  return {static_cast<size_t>(state.range(0)), static_cast<size_t>(state.range(1)),
          static_cast<size_t>(state.range(2)), static_cast<size_t>(state.range(3))};
}

std::vector<float> random_input(size_t n, unsigned seed) {
  std::vector<float> x(n);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& v : x) v = d(rng);
  return x;
}

double causal_flops(const Shape& s, int products) {
  const double pairs = static_cast<double>(s.T) * static_cast<double>(s.T + 1) / 2.0;
  return products * 2.0 * pairs * static_cast<double>(s.C) * static_cast<double>(s.B);
}

void BM_AttentionForward(benchmark::State& state) {
  const Shape s = shape_of(state);
  const std::vector<float> qkv = random_input(s.B * s.T * 3 * s.C, 1);
  std::vector<float> out(s.B * s.T * s.C), lse(s.B * s.NH * s.T);
  for (auto _ : state) {
    fp8lm::kernels::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(causal_flops(s, 2) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void BM_AttentionBackward(benchmark::State& state) {
  const Shape s = shape_of(state);
  const std::vector<float> qkv = random_input(s.B * s.T * 3 * s.C, 1);
  const std::vector<float> dout = random_input(s.B * s.T * s.C, 2);
  std::vector<float> out(s.B * s.T * s.C), lse(s.B * s.NH * s.T), dqkv(qkv.size());
  fp8lm::kernels::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  for (auto _ : state) {
    fp8lm::kernels::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(),
                                       lse.data(), s.B, s.T, s.C, s.NH);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(causal_flops(s, 5) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// gpt2 (C 768, 12 heads) and d6 (C 384, 6 heads) at batch 4 × 256, and gpt2 at 1024 tokens.
#define FP8LM_ATTENTION_SHAPES \
  Args({4, 256, 768, 12})->Args({4, 256, 384, 6})->Args({1, 1024, 768, 12})->UseRealTime()
BENCHMARK(BM_AttentionForward)->FP8LM_ATTENTION_SHAPES;
BENCHMARK(BM_AttentionBackward)->FP8LM_ATTENTION_SHAPES;

}  // namespace
