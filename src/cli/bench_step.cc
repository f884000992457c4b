// fp8lm bench step: forward + backward time, tokens/s and saved-activation bytes of the GPT
// model in fp32, bf16 and fp8, same weights and batch, interleaved in one run.
#include <algorithm>
#include <cstdio>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli/bench_util.h"
#include "cli/commands.h"
#include "core/check.h"
#include "core/parallel.h"
#include "kernels/simd.h"
#include "model/gpt.h"

namespace fp8lm::cli {
namespace {

struct BenchStepOptions {
  bool json = false;
  std::string preset = "gpt2";
  int batch = 4;
  int seq = 256;
  int reps = 3;
  bool pytorch = false;
  std::string python = "/usr/bin/python3";  // Debian's python3-torch lives there
};

// Runs bench/pytorch_step.py (PyTorch fp32 forward+backward of the same preset and shape)
// and returns its JSON line.
nlohmann::json run_pytorch(const BenchStepOptions& o) {
  const std::string script = std::string(FP8LM_SOURCE_DIR) + "/bench/pytorch_step.py";
  const std::string cmd = "OPENBLAS_CORETYPE=SkylakeX " + o.python + " " + script +
                          " --preset " + o.preset + " --batch " + std::to_string(o.batch) +
                          " --seq " + std::to_string(o.seq) + " --threads " +
                          std::to_string(num_threads()) + " --reps " + std::to_string(o.reps);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) fail("cannot run ", cmd);
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  if (status != 0 || out.empty())
    fail("PyTorch benchmark failed (", cmd, "); is python3-torch installed?");
  return nlohmann::json::parse(out.substr(out.rfind('{')));
}

void run_bench_step(const BenchStepOptions& o) {
  apply_global_options();
  const GptConfig cfg = gpt_preset(o.preset);
  if (o.seq > cfg.seq_len) fail("--seq ", o.seq, " exceeds the preset's seq_len ", cfg.seq_len);
  GptParams params(cfg);
  params.init_gpt2(1);
  const size_t B = static_cast<size_t>(o.batch), T = static_cast<size_t>(o.seq);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  std::mt19937 rng(2);
  std::uniform_int_distribution<int32_t> d(0, cfg.vocab_size - 1);
  for (size_t i = 0; i < B * T; ++i) {
    tokens[i] = d(rng);
    targets[i] = d(rng);
  }
  const ComputeMode modes[] = {ComputeMode::kF32, ComputeMode::kBF16, ComputeMode::kFP8};
  std::vector<std::unique_ptr<Gpt>> models;
  for (ComputeMode m : modes) models.push_back(std::make_unique<Gpt>(params, m, B, T));
  std::vector<std::vector<double>> times(models.size());
  std::vector<float> losses(models.size());
  for (auto& m : models) m->forward_backward(tokens.data(), targets.data());  // warm-up
  for (int r = 0; r < o.reps; ++r) {
    for (size_t i = 0; i < models.size(); ++i) {  // interleaved: drift hits all modes alike
      const auto t0 = std::chrono::steady_clock::now();
      losses[i] = models[i]->forward_backward(tokens.data(), targets.data());
      times[i].push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  nlohmann::json rows = nlohmann::json::array();
  double t32 = 0;
  size_t a32 = 0;
  if (!o.json)
    std::printf("bench step: %s, batch %zux%zu, %d threads, simd %s, median of %d\n",
                o.preset.c_str(), B, T, num_threads(), simd::active_target().c_str(), o.reps);
  for (size_t i = 0; i < models.size(); ++i) {
    const double step = median(times[i]);
    const size_t act = models[i]->activation_bytes();
    if (i == 0) {
      t32 = step;
      a32 = act;
    }
    const std::string mode(compute_mode_name(modes[i]));
    rows.push_back({{"mode", mode},
                    {"tokens_per_s", static_cast<double>(B * T) / step},
                    {"step_s", step},
                    {"activation_bytes", act},
                    {"time_vs_fp32", step / t32},
                    {"activation_vs_fp32", static_cast<double>(act) / static_cast<double>(a32)},
                    {"loss", losses[i]}});
    if (!o.json)
      std::printf("  %-5s %8.1f tokens/s  step %.3f s (%.2fx fp32)  activations %7.1f MiB "
                  "(%.2fx fp32)  loss %.4f\n",
                  mode.c_str(), static_cast<double>(B * T) / step, step, step / t32,
                  static_cast<double>(act) / (1 << 20),
                  static_cast<double>(act) / static_cast<double>(a32), losses[i]);
  }
  nlohmann::json j = {{"preset", o.preset}, {"batch", B},          {"seq", T},
                      {"threads", num_threads()}, {"reps", o.reps}, {"results", rows}};
  if (o.pytorch) {  // back to back, after fp8lm's runs, same shape and threads
    nlohmann::json pt = run_pytorch(o);
    const double ours = rows[2]["tokens_per_s"].get<double>();
    pt["fp8_speedup"] = ours / pt["tokens_per_s"].get<double>();
    j["pytorch_fp32"] = pt;
    if (!o.json)
      std::printf("  PyTorch %s fp32 (OpenBLAS core %s): %.1f tokens/s; fp8lm fp8 is %.2fx\n",
                  pt["torch"].get<std::string>().c_str(),
                  pt["openblas_coretype"].get<std::string>().c_str(),
                  pt["tokens_per_s"].get<double>(), pt["fp8_speedup"].get<double>());
  }
  if (o.json) std::printf("%s\n", j.dump(2).c_str());
}

}  // namespace

void register_bench_step(CLI::App& bench) {
  auto o = std::make_shared<BenchStepOptions>();
  CLI::App* sub = bench.add_subcommand(
      "step", "GPT forward+backward: tokens/s and saved activations in fp32, bf16 and fp8");
  sub->add_flag("--json", o->json, "Print JSON");
  sub->add_option("--preset", o->preset, "Model preset")->capture_default_str();
  sub->add_option("--batch", o->batch, "Sequences per step")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  sub->add_option("--seq", o->seq, "Tokens per sequence")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  sub->add_option("--reps", o->reps, "Timed steps per mode (median reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->add_flag("--pytorch", o->pytorch,
                "Also time PyTorch fp32 forward+backward (bench/pytorch_step.py) in this run");
  sub->add_option("--python", o->python, "Python with torch, for --pytorch")
      ->capture_default_str();
  sub->callback([o] { run_bench_step(*o); });
}

}  // namespace fp8lm::cli
