// Micro-benchmarks of the cast kernels (bytes/s of f32 processed) on the dispatched target.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/cast.h"

namespace {

std::vector<float> random_input(size_t n) {
  std::vector<float> x(n);
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& v : x) v = d(rng);
  return x;
}

void BM_Quantize(benchmark::State& state, fp8lm::DType to) {
  const size_t n = static_cast<size_t>(state.range(0));
  const std::vector<float> x = random_input(n);
  std::vector<uint8_t> out(n * fp8lm::dtype_size(to));
  for (auto _ : state) {
    benchmark::DoNotOptimize(fp8lm::kernels::quantize(out.data(), to, x.data(), n, 16.0f));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * sizeof(float)));
}

void BM_Dequantize(benchmark::State& state, fp8lm::DType from) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> q(n * fp8lm::dtype_size(from), 0x3C);
  std::vector<float> out(n);
  for (auto _ : state) {
    fp8lm::kernels::dequantize(out.data(), q.data(), from, n, 0.5f);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * sizeof(float)));
}

void BM_CastTranspose(benchmark::State& state) {
  const size_t rows = static_cast<size_t>(state.range(0)), cols = rows;
  const std::vector<float> x = random_input(rows * cols);
  std::vector<uint8_t> out(rows * cols), out_t(rows * cols);
  for (auto _ : state) {
    benchmark::DoNotOptimize(fp8lm::kernels::cast_transpose(
        out.data(), out_t.data(), fp8lm::DType::kE4M3, x.data(), rows, cols, 16.0f));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rows * cols * sizeof(float)));
}

BENCHMARK_CAPTURE(BM_Quantize, e4m3, fp8lm::DType::kE4M3)->Arg(1 << 12)->Arg(1 << 20)->Arg(1 << 24);
BENCHMARK_CAPTURE(BM_Quantize, e5m2, fp8lm::DType::kE5M2)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Quantize, bf16, fp8lm::DType::kBF16)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Dequantize, e4m3, fp8lm::DType::kE4M3)->Arg(1 << 20)->Arg(1 << 24);
BENCHMARK(BM_CastTranspose)->Arg(768)->Arg(3072);

}  // namespace
