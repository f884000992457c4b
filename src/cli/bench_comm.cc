// fp8lm bench comm (under mpirun): the gradient communication of one data-parallel training
// step of a GPT, per precision level, on gradients of the model's real tensor shapes —
// fp32 (FP32 all-reduce), bf16 (BF16 all-reduce), O2 (FP8 all-reduce with auto scaling), O3
// (FP8 reduce to owners + the owners' weight replicas gathered). Bytes are what each rank
// passes to MPI (dist::comm_bytes); times are medians, levels interleaved.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli/bench_util.h"
#include "cli/commands.h"
#include "core/check.h"
#include "core/memory.h"
#include "distributed/world.h"
#include "tensor/scaling.h"
#include "train/grad_sync.h"
#include "train/zero_replica.h"

namespace fp8lm::cli {
namespace {

struct BenchCommOptions {
  bool json = false;
  std::string preset = "gpt2";
  int reps = 5;
};

void run_bench_comm(const BenchCommOptions& o) {
  apply_global_options();
  const int world = dist::size(), rank = dist::rank();
  const GptConfig cfg = gpt_preset(o.preset);
  const std::vector<ParamSpec> specs = param_layout(cfg);
  size_t numel = 0;
  for (const ParamSpec& s : specs) numel += s.numel();

  // Gradient-like values (N(0, 1e-3), different per rank) in every level's format, averaged
  // by the trainer's GradSync of each level; O3 also gathers the weight replicas.
  std::mt19937 rng(static_cast<uint32_t>(17 + rank));
  std::normal_distribution<float> d(0.0f, 1e-3f);
  std::vector<Tensor> f32;
  std::vector<ScaledTensor> e4m3;
  e4m3.reserve(specs.size());  // views point into the elements
  std::vector<MutableScaledView> f32_grads, fp8_grads;
  for (const ParamSpec& s : specs) {
    f32.emplace_back(DType::kF32, s.shape, MemCategory::kGradients);
    float* g = f32.back().as<float>();
    for (size_t i = 0; i < s.numel(); ++i) g[i] = d(rng);
    e4m3.emplace_back(s.shape, ScalingRecipe{}, MemCategory::kGradients);
    quantize(e4m3.back(), g);
    f32_grads.push_back(tensor_view(f32.back().data(), DType::kF32, s.shape, nullptr));
    fp8_grads.push_back(e4m3.back().mut_view());
  }
  ZeroReplica zero(cfg, world, rank);
  GradSync sync[] = {GradSync(PrecisionLevel::kFP32, "auto"),
                     GradSync(PrecisionLevel::kBF16, "auto"), GradSync(PrecisionLevel::kO2, "auto"),
                     GradSync(PrecisionLevel::kO3, "auto", zero.owner())};
  const char* names[] = {"fp32", "bf16", "O2", "O3"};
  auto run = [&](int level) {
    sync[level].average(level < 2 ? f32_grads : fp8_grads);
    if (level == 3) zero.gather();
  };
  std::vector<std::vector<double>> times(4);
  std::vector<dist::CommBytes> bytes(4);
  for (int rep = -1; rep < o.reps; ++rep) {  // rep -1: warm-up
    for (int level = 0; level < 4; ++level) {
      dist::barrier();
      dist::reset_comm_bytes();
      const auto t0 = std::chrono::steady_clock::now();
      run(level);
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      bytes[level] = dist::comm_bytes();
      if (rep >= 0) times[level].push_back(t);
    }
  }
  if (rank != 0) return;
  nlohmann::json rows = nlohmann::json::array();
  const double f32_bytes = static_cast<double>(bytes[0].total_bytes());
  const double bf16_bytes = static_cast<double>(bytes[1].total_bytes());
  if (!o.json)
    std::printf("bench comm: %s (%zu parameters, %zu tensors), %d ranks, median of %d\n",
                o.preset.c_str(), numel, specs.size(), world, o.reps);
  for (int level = 0; level < 4; ++level) {
    // Gradient bytes: everything but O3's weight gathers (reported beside them).
    const auto& kinds = bytes[level].bytes;
    const double weights =
        kinds.count("allgather") ? static_cast<double>(kinds.at("allgather")) : 0.0;
    const double b = static_cast<double>(bytes[level].total_bytes()) - weights;
    const double t = median(times[level]);
    rows.push_back({{"level", names[level]},
                    {"gradient_bytes_per_step", b},
                    {"weight_gather_bytes_per_step", weights},
                    {"bytes_by_kind", kinds},
                    {"seconds_per_step", t},
                    {"gradient_bytes_vs_fp32", b / f32_bytes},
                    {"gradient_bytes_vs_bf16", b / bf16_bytes}});
    if (!o.json)
      std::printf(
          "  %-4s gradients %7.1f MiB/step (%.3fx fp32, %.3fx bf16)  weight gather %6.1f "
          "MiB  %7.1f ms\n",
          names[level], b / (1 << 20), b / f32_bytes, b / bf16_bytes, weights / (1 << 20), t * 1e3);
  }
  if (!o.json) {
    std::printf("  O3 placement: state bytes per rank");
    for (int64_t b : zero.rank_state_bytes())
      std::printf(" %.1f MiB", static_cast<double>(b) / (1 << 20));
    std::printf("\n");
  }
  nlohmann::json j = {{"preset", o.preset},
                      {"world_size", world},
                      {"reps", o.reps},
                      {"results", rows},
                      {"o3_rank_state_bytes", zero.rank_state_bytes()}};
  if (o.json) std::printf("%s\n", j.dump(2).c_str());
}

}  // namespace

void register_bench_comm(CLI::App& bench) {
  auto o = std::make_shared<BenchCommOptions>();
  CLI::App* sub = bench.add_subcommand(
      "comm",
      "Gradient communication per training step at fp32, bf16, O2 and O3 (run under "
      "mpirun)");
  sub->add_flag("--json", o->json, "Print JSON");
  sub->add_option("--preset", o->preset, "Model preset")->capture_default_str();
  sub->add_option("--reps", o->reps, "Timed steps per level (median reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->callback([o] { run_bench_comm(*o); });
}

}  // namespace fp8lm::cli
