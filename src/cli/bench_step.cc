// fp8lm bench step: forward + backward time, tokens/s and saved-activation bytes of the GPT
// model in fp32, bf16 and fp8, same weights and batch, interleaved in one run. With --train,
// whole training steps (forward, backward, AdamW) at the levels fp32, bf16, O1 and O2, with
// the model-state bytes of each. --telemetry adds the last level with every FP8 cast's
// statistics taken (a telemetry step) and the overhead that costs at telemetry.every.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/openblas.h"
#include "core/check.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "kernels/gemm.h"
#include "kernels/peak.h"
#include "kernels/simd.h"
#include "model/gpt.h"
#include "train/config.h"
#include "train/gpt_state.h"

namespace fp8lm::cli {
namespace {

struct BenchStepOptions {
  bool json = false;
  std::string preset = "gpt2";
  int batch = 4;
  int seq = 256;
  int reps = 3;
  bool pytorch = false;
  bool train = false;
  bool telemetry = false;
  std::vector<std::string> levels = {"fp32", "bf16", "O1", "O2"};
  std::vector<std::string> lm_heads = {"level"};  // each level (mode) once per LM head format
  std::string python = "/usr/bin/python3";  // Debian's python3-torch lives there
};

// Runs bench/pytorch_step.py (PyTorch fp32 forward+backward of the same preset and shape)
// and returns its JSON line.
nlohmann::json run_pytorch(const BenchStepOptions& o) {
  const std::string script = std::string(FP8LM_SOURCE_DIR) + "/bench/pytorch_step.py";
  const std::string core = openblas_core_for_target();
  const std::string cmd = (core.empty() ? "" : "OPENBLAS_CORETYPE=" + core + " ") +
                          "ATEN_CPU_CAPABILITY=" + aten_capability_for_target() + " " + o.python +
                          " " + script + " --preset " + o.preset + " --batch " +
                          std::to_string(o.batch) + " --seq " + std::to_string(o.seq) +
                          " --threads " + std::to_string(num_threads()) + " --reps " +
                          std::to_string(o.reps) + (o.train ? " --optimizer" : "");
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

// Model FLOPs per token of a training step (forward 1×, backward 2×): every matrix product
// with a weight, 2 FLOPs per multiply-add, 6·(12·L·d² + V·d), plus causal attention, whose
// QKᵀ and AV products cover half of the T×T scores: 6·L·T·d. Padding, recomputation and the
// elementwise work are not counted.
double model_flops_per_token(const GptConfig& c, size_t T) {
  const double L = c.n_layer, d = c.n_embd, V = c.vocab_size;
  return 6.0 * (12.0 * L * d * d + V * d) + 6.0 * L * static_cast<double>(T) * d;
}

// One configuration under test: a step function and what it keeps in memory.
struct Runner {
  std::string name;
  std::unique_ptr<Gpt> model;
  std::unique_ptr<AdamW> opt;  // --train only
  size_t state_bytes = 0;      // master + gradients + moments (--train only)
  std::unique_ptr<QuantProbe> probe;  // --telemetry: armed on every step
};

void run_bench_step(const BenchStepOptions& o) {
  apply_global_options();
  const GptConfig cfg = gpt_preset(o.preset);
  if (o.seq > cfg.seq_len) fail("--seq ", o.seq, " exceeds the preset's seq_len ", cfg.seq_len);
  if (o.telemetry && (!o.train || o.pytorch))
    fail("--telemetry goes with --train, without --pytorch (the rows compared are the last two)");
  const size_t B = static_cast<size_t>(o.batch), T = static_cast<size_t>(o.seq);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  std::mt19937 rng(2);
  std::uniform_int_distribution<int32_t> d(0, cfg.vocab_size - 1);
  for (size_t i = 0; i < B * T; ++i) {
    tokens[i] = d(rng);
    targets[i] = d(rng);
  }
  // LM head formats (precision.lm_head's values): a row per level and format ("O2/bf16"; the
  // level's name alone for `level` only).
  for (const std::string& h : o.lm_heads)
    if (h != "level" && h != "f32" && h != "bf16")
      fail("--lm-head ", h, ": must be level, f32 or bf16");
  const bool suffix = o.lm_heads.size() > 1 || o.lm_heads[0] != "level";
  auto head_suffix = [&](DType h) {
    return suffix ? "/" + std::string(dtype_name(h)) : std::string();
  };
  auto heads_of = [&](ComputeMode m) {  // each format once (level may repeat f32 or bf16)
    std::vector<DType> heads;
    for (const std::string& h : o.lm_heads)
      if (std::find(heads.begin(), heads.end(), lm_head_dtype(h, m)) == heads.end())
        heads.push_back(lm_head_dtype(h, m));
    return heads;
  };
  std::vector<Runner> runners;
  std::unique_ptr<GptParams> params;
  if (o.train) {
    const MemCategory states[] = {MemCategory::kMaster, MemCategory::kGradients,
                                  MemCategory::kOptimM1, MemCategory::kOptimM2};
    auto state_bytes = [&] {
      int64_t s = 0;
      for (MemCategory c : states) s += mem_stats(c).current;
      return static_cast<size_t>(s);
    };
    for (const std::string& name : o.levels)
      for (const DType head : heads_of(level_plan(level_from_name(name)).compute)) {
        const PrecisionLevel l = level_from_name(name);
        const size_t before = state_bytes();
        Runner r{std::string(level_name(l)) + head_suffix(head), nullptr,
                 make_gpt_optimizer(cfg, l, {}, 1), 0, nullptr};
        r.model = std::make_unique<Gpt>(cfg, level_plan(l).compute, B, T);
        r.model->set_weights(master_views(*r.opt));  // live: updates need no new call
        r.model->set_lm_head(head);
        r.state_bytes = state_bytes() - before;
        runners.push_back(std::move(r));
      }
    if (o.telemetry) {  // the last level again, with telemetry on every step
      const PrecisionLevel l = level_from_name(o.levels.back());
      if (level_plan(l).compute != ComputeMode::kFP8)
        fail("--telemetry: the last of --levels must be an FP8 level (O1, O2), got ", o.levels.back());
      const size_t before = state_bytes();
      Runner r{std::string(level_name(l)) + "+telemetry", nullptr,
               make_gpt_optimizer(cfg, l, {}, 1), 0, nullptr};
      r.model = std::make_unique<Gpt>(cfg, level_plan(l).compute, B, T);
      r.model->set_weights(master_views(*r.opt));
      // The LM head of the row it is compared with (the last level's last format).
      r.model->set_lm_head(lm_head_dtype(o.lm_heads.back(), level_plan(l).compute));
      r.state_bytes = state_bytes() - before;
      r.probe = std::make_unique<QuantProbe>();
      r.probe->arm(true);
      r.model->set_probe(r.probe.get());
      runners.push_back(std::move(r));
    }
  } else {
    params = std::make_unique<GptParams>(cfg);
    params->init_gpt2(1);
    for (ComputeMode m : {ComputeMode::kF32, ComputeMode::kBF16, ComputeMode::kFP8})
      for (const DType head : heads_of(m)) {
        runners.push_back({std::string(compute_mode_name(m)) + head_suffix(head),
                           std::make_unique<Gpt>(*params, m, B, T), nullptr, 0, nullptr});
        runners.back().model->set_lm_head(head);
      }
  }
  auto step = [&](Runner& r) {
    const float loss = r.model->forward_backward(tokens.data(), targets.data());
    if (r.opt) r.opt->step(grad_views(*r.model), 1e-4f, 1.0f, 1.0f);
    if (r.probe) r.probe->take();
    return loss;
  };
  std::vector<std::vector<double>> times(runners.size());
  // BF16 products with measured ranges (the bf16 level, the BF16 LM head) and how many of
  // them took the dot kernel, per row, over its timed steps.
  std::vector<kernels::Bf16DotCount> bf16(runners.size());
  std::vector<float> losses(runners.size());
  // PyTorch runs before fp8lm's steps and again after them; its speed is the geometric mean
  // of the two, so drift of a shared machine between the runs does not favour either side.
  nlohmann::json pt_before;
  if (o.pytorch) pt_before = run_pytorch(o);
  for (Runner& r : runners) step(r);  // warm-up
  for (int rep = 0; rep < o.reps; ++rep) {
    for (size_t i = 0; i < runners.size(); ++i) {  // interleaved: drift hits all alike
      const kernels::Bf16DotCount c0 = kernels::bf16_dot_count();
      const auto t0 = std::chrono::steady_clock::now();
      losses[i] = step(runners[i]);
      times[i].push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      const kernels::Bf16DotCount c1 = kernels::bf16_dot_count();
      bf16[i].products += c1.products - c0.products;
      bf16[i].on_dot += c1.on_dot - c0.on_dot;
    }
  }
  nlohmann::json rows = nlohmann::json::array();
  const double n_params = static_cast<double>(cfg.num_params());
  const double peak = kernels::measure_fma_peak_gflops(num_threads());
  const double flops_per_token = model_flops_per_token(cfg, T);
  if (!o.json)
    std::printf("bench step%s: %s, batch %zux%zu, %d threads, simd %s, median of %d; model "
                "%.1f MFLOP/token, FMA peak %.1f GFLOP/s\n",
                o.train ? " --train (forward, backward, AdamW)" : "", o.preset.c_str(), B, T,
                num_threads(), simd::active_target().c_str(), o.reps, flops_per_token / 1e6,
                peak);
  const double t32 = median(times[0]);
  const size_t a32 = runners[0].model->activation_bytes();
  for (size_t i = 0; i < runners.size(); ++i) {
    const double t = median(times[i]);
    const size_t act = runners[i].model->activation_bytes();
    const double gflops = flops_per_token * static_cast<double>(B * T) / t / 1e9;
    nlohmann::json row = {
        {o.train ? "level" : "mode", runners[i].name},
        {"tokens_per_s", static_cast<double>(B * T) / t},
        {"step_s", t},
        {"activation_bytes", act},
        {"time_vs_fp32", t / t32},
        {"activation_vs_fp32", static_cast<double>(act) / static_cast<double>(a32)},
        {"loss", losses[i]},
        {"model_gflops", gflops},
        {"peak_fraction", gflops / peak}};
    if (o.train)
      row["state_bytes_per_param"] = static_cast<double>(runners[i].state_bytes) / n_params;
    const double on_dot = bf16[i].products == 0 ? 0.0
                                                : static_cast<double>(bf16[i].on_dot) /
                                                      static_cast<double>(bf16[i].products);
    if (bf16[i].products > 0) row["bf16_products_on_dot"] = on_dot;
    rows.push_back(row);
    if (!o.json) {
      std::printf(
          "  %-5s %8.1f tokens/s  step %.3f s (%.2fx %s)  activations %7.1f MiB "
          "(%.2fx %s)",
          runners[i].name.c_str(), static_cast<double>(B * T) / t, t, t / t32,
          runners[0].name.c_str(), static_cast<double>(act) / (1 << 20),
          static_cast<double>(act) / static_cast<double>(a32), runners[0].name.c_str());
      if (o.train) std::printf("  states %.2f B/param", row["state_bytes_per_param"].get<double>());
      std::printf("  loss %.4f  %.1f GFLOP/s (%.0f%% of peak)", losses[i], gflops,
                  100.0 * gflops / peak);
      if (bf16[i].products > 0) std::printf("  BF16 products on dot %.0f%%", 100.0 * on_dot);
      std::printf("\n");
    }
  }
  nlohmann::json j = {{"preset", o.preset},
                      {"batch", B},
                      {"seq", T},
                      {"threads", num_threads()},
                      {"reps", o.reps},
                      {"train", o.train},
                      {"simd", simd::active_target()},
                      {"flops_per_token", flops_per_token},
                      {"fma_peak_gflops", peak},
                      {"results", rows}};
  if (o.telemetry) {  // a telemetry step against the same level's plain step
    const size_t n = runners.size();
    const double ratio = median(times[n - 1]) / median(times[n - 2]);
    const int every = TrainConfig{}.telemetry_every;
    j["telemetry"] = {{"step_ratio", ratio},
                      {"every", every},
                      {"overhead_at_every", (ratio - 1.0) / every}};
    if (!o.json)
      std::printf("  telemetry step %.3fx a plain one: %.2f%% overhead at telemetry.every = %d\n",
                  ratio, 100.0 * (ratio - 1.0) / every, every);
  }
  if (o.pytorch) {  // same shape and threads, before and after fp8lm's runs
    nlohmann::json pt = run_pytorch(o);
    const double before = pt_before["tokens_per_s"].get<double>();
    const double after = pt["tokens_per_s"].get<double>();
    pt["tokens_per_s_before"] = before;
    pt["tokens_per_s_after"] = after;
    pt["tokens_per_s"] = std::sqrt(before * after);
    const double ours = rows.back()["tokens_per_s"].get<double>();  // fp8 / O2
    pt["speedup"] = ours / pt["tokens_per_s"].get<double>();
    // The same model FLOPs as fp8lm's rows: where PyTorch already runs at more than half of
    // the FMA peak, no FP32-accumulating step can be twice as fast (docs/performance.md).
    pt["model_gflops"] = flops_per_token * pt["tokens_per_s"].get<double>() / 1e9;
    pt["peak_fraction"] = pt["model_gflops"].get<double>() / peak;
    j["pytorch_fp32"] = pt;
    if (!o.json)
      std::printf(
          "  PyTorch %s fp32%s (OpenBLAS core %s, ATen %s): %.1f tokens/s (%.1f before, %.1f "
          "after fp8lm's runs), %.0f%% of peak (twice it: %.0f%%); fp8lm %s is %.2fx\n",
          pt["torch"].get<std::string>().c_str(), o.train ? " + AdamW" : "",
          pt["openblas_coretype"].get<std::string>().c_str(),
          pt["aten_capability"].get<std::string>().c_str(), pt["tokens_per_s"].get<double>(),
          before, after, 100.0 * pt["peak_fraction"].get<double>(),
          200.0 * pt["peak_fraction"].get<double>(), runners.back().name.c_str(),
          pt["speedup"].get<double>());
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
  sub->add_flag("--train", o->train,
                "Time whole training steps (with AdamW) at the levels fp32, bf16, O1 and O2");
  sub->add_flag("--telemetry", o->telemetry,
                "With --train: also time the last level with telemetry on (every FP8 cast's "
                "statistics), and report its overhead at the default telemetry.every");
  sub->add_option("--levels", o->levels, "With --train: the levels to time (the first is the base)")
      ->capture_default_str();
  sub->add_option("--lm-head", o->lm_heads,
                  "The LM head operand formats to time each level with (level, f32, bf16; "
                  "precision.lm_head)")
      ->capture_default_str();
  sub->add_flag("--pytorch", o->pytorch,
                "Also time PyTorch fp32 (with --train: + AdamW) in this run, "
                "bench/pytorch_step.py");
  sub->add_option("--python", o->python, "Python with torch, for --pytorch")->capture_default_str();
  sub->callback([o] { run_bench_step(*o); });
}

}  // namespace fp8lm::cli
