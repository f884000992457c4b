// Micro-benchmarks of the optimizer (parameters/s): a whole AdamW step per precision level on
// one 4M-parameter tensor, and its two kernel passes (amax, then write) at O2's formats.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/cast.h"
#include "optim/adamw.h"

namespace {

using namespace fp8lm;

constexpr size_t kParams = size_t{1} << 22;

std::vector<float> normal(size_t n, float sd, uint32_t seed) {
  std::vector<float> x(n);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  for (float& v : x) v = d(rng);
  return x;
}

// A gradient in `dtype` with a per-tensor scale (the model's output format at each level).
struct Grad {
  std::vector<uint8_t> data;
  float scale_inv = 1.0f;
  DType dtype;
  Grad(DType t, const std::vector<float>& g) : data(g.size() * dtype_size(t)), dtype(t) {
    if (t == DType::kF32) {
      std::memcpy(data.data(), g.data(), g.size() * sizeof(float));
      return;
    }
    const float s = 256.0f / kernels::amax(g.data(), g.size());
    kernels::quantize(data.data(), t, g.data(), g.size(), s);
    scale_inv = 1.0f / s;
  }
  ScaledView view() const {
    return tensor_view(static_cast<const void*>(data.data()), dtype,
                       Shape{static_cast<int64_t>(data.size() / dtype_size(dtype))}, &scale_inv);
  }
};

void BM_AdamWStep(benchmark::State& state, PrecisionLevel level) {
  const std::vector<float> w0 = normal(kParams, 0.02f, 1);
  AdamW opt(level, {}, {"w"}, {kParams}, {true}, {w0.data()});
  const Grad g(level_plan(level).states.grad, normal(kParams, 1e-3f, 2));
  const std::vector<ScaledView> grads{g.view()};
  for (auto _ : state) benchmark::DoNotOptimize(opt.step(grads, 1e-4f));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kParams));
}

// The O2 states (FP16 master, E4M3 m1, FP16 m2, E4M3 gradient) after a few steps.
struct O2States {
  AdamW opt{PrecisionLevel::kO2, {}, {"w"}, {kParams}, {true}, {normal(kParams, 0.02f, 1).data()}};
  Grad g{DType::kE4M3, normal(kParams, 1e-3f, 2)};
  kernels::AdamWArgs args{1e-4f, 0.9f, 0.95f, 1e-8f, 1e-5f, 0.5f, 0.1f, 1.0f};
  O2States() {
    for (int i = 0; i < 3; ++i) opt.step({g.view()}, 1e-4f);
  }
  AdamW::Param& p() { return opt.params()[0]; }
};

void BM_AdamWAmaxO2(benchmark::State& state) {
  O2States s;
  for (auto _ : state)
    benchmark::DoNotOptimize(kernels::adamw_amax(s.p().master.view(), s.p().m1.view(),
                                                 s.p().m2.view(), s.g.view(), s.args));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kParams));
}

void BM_AdamWApplyO2(benchmark::State& state) {
  O2States s;
  const kernels::AdamWScales keep{s.p().master.meta.scale, s.p().m1.meta.scale,
                                  s.p().m2.meta.scale};  // stores at the current scales
  for (auto _ : state)
    kernels::adamw_apply(s.p().master.mut_view(), s.p().m1.mut_view(), s.p().m2.mut_view(),
                         s.g.view(), s.args, keep);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kParams));
}

BENCHMARK_CAPTURE(BM_AdamWStep, fp32, PrecisionLevel::kFP32)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_AdamWStep, O1, PrecisionLevel::kO1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_AdamWStep, O2, PrecisionLevel::kO2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_AdamWAmaxO2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_AdamWApplyO2)->Unit(benchmark::kMillisecond);

}  // namespace
