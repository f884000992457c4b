// fp8lm bench cast: scale + cast + amax (f32 → E4M3) over a large buffer beside a plain
// memcpy of the same bytes with the same threads, interleaved, medians of several runs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "cli/bench_util.h"
#include "cli/commands.h"
#include "core/parallel.h"
#include "kernels/cast.h"
#include "kernels/simd.h"
#include "tensor/tensor.h"

namespace fp8lm::cli {
namespace {

struct BenchCastOptions {
  bool json = false;
  int mib = 256;
  int reps = 9;
};

template <typename Fn>
double seconds(Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run_bench_cast(const BenchCastOptions& o) {
  apply_global_options();
  const size_t n = static_cast<size_t>(o.mib) << 18;  // f32 elements in `mib` MiB
  const size_t bytes = n * sizeof(float);
  Tensor src(DType::kF32, {static_cast<int64_t>(n)}, MemCategory::kWorkspace);
  Tensor copy(DType::kF32, {static_cast<int64_t>(n)}, MemCategory::kWorkspace);
  Tensor q(DType::kE4M3, {static_cast<int64_t>(n)}, MemCategory::kWorkspace);
  Tensor back(DType::kF32, {static_cast<int64_t>(n)}, MemCategory::kWorkspace);
  {
    std::mt19937 rng(1234);
    std::normal_distribution<float> dist(0.0f, 3.0f);
    float* x = src.as<float>();
    for (size_t i = 0; i < n; ++i) x[i] = dist(rng);
  }
  // Touch every output page once so page faults are not timed.
  std::memset(copy.data(), 0, bytes);
  std::memset(q.data(), 0, n);
  std::memset(back.data(), 0, bytes);

  const float scale = 32.0f;
  auto run_memcpy = [&] {
    parallel_for(bytes, size_t{1} << 20, 64, [&](size_t, size_t b, size_t e) {
      std::memcpy(static_cast<char*>(copy.data()) + b, static_cast<const char*>(src.data()) + b,
                  e - b);
    });
  };
  auto run_cast = [&] { kernels::quantize(q.data(), DType::kE4M3, src.as<float>(), n, scale); };
  auto run_dequant = [&] {
    kernels::dequantize(back.as<float>(), q.data(), DType::kE4M3, n, 1.0f / scale);
  };
  std::vector<double> t_copy, t_cast, t_dequant;
  run_memcpy();
  run_cast();
  run_dequant();
  for (int r = 0; r < o.reps; ++r) {  // interleaved so drift hits all three alike
    t_copy.push_back(seconds(run_memcpy));
    t_cast.push_back(seconds(run_cast));
    t_dequant.push_back(seconds(run_dequant));
  }
  const double gb = static_cast<double>(bytes) / 1e9;
  const double copy_gbps = gb / median(t_copy);
  const double cast_gbps = gb / median(t_cast);
  const double dequant_gbps = gb / median(t_dequant);  // in f32-output bytes
  const nlohmann::json result = {{"bytes", bytes},
                                 {"threads", num_threads()},
                                 {"simd", simd::active_target()},
                                 {"reps", o.reps},
                                 {"memcpy_gbps", copy_gbps},
                                 {"cast_gbps", cast_gbps},
                                 {"ratio", cast_gbps / copy_gbps},
                                 {"dequantize_gbps", dequant_gbps},
                                 {"dequantize_ratio", dequant_gbps / copy_gbps}};
  if (o.json) {
    std::printf("%s\n", result.dump(2).c_str());
    return;
  }
  std::printf("bench cast: %d MiB of f32, %d threads, simd %s, median of %d\n", o.mib,
              num_threads(), simd::active_target().c_str(), o.reps);
  std::printf("  memcpy                    %7.2f GB/s\n", copy_gbps);
  std::printf("  scale+cast+amax f32->e4m3 %7.2f GB/s   ratio %.2f\n", cast_gbps,
              cast_gbps / copy_gbps);
  std::printf("  dequantize e4m3->f32      %7.2f GB/s   ratio %.2f (f32 bytes)\n", dequant_gbps,
              dequant_gbps / copy_gbps);
}

}  // namespace

void register_bench_cast(CLI::App& bench) {
  auto o = std::make_shared<BenchCastOptions>();
  CLI::App* sub = bench.add_subcommand(
      "cast", "Scale+cast+amax f32->e4m3 vs memcpy of the same bytes (GB/s and ratio)");
  sub->add_flag("--json", o->json, "Print JSON");
  sub->add_option("--mib", o->mib, "Size of the f32 input in MiB")
      ->check(CLI::Range(1, 16384))
      ->capture_default_str();
  sub->add_option("--reps", o->reps, "Repetitions (median reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->callback([o] { run_bench_cast(*o); });
}

}  // namespace fp8lm::cli
