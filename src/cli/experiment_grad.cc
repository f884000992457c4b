// fp8lm experiment grad-scaling | formats (docs/experiments.md): FP8 gradient averaging at N
// data-parallel ranks simulated in one process (train/grad_comm_study.h).
//   grad-scaling: pre / post / auto (μ) / sqrt scaling at N = 2, 8, 32, 128 (FP8-LM Fig. 7).
//   formats:      E4M3 vs E5M2 gradients under auto scaling at N = 1 (the cast alone) … 128.
// Each writes OUT/experiment.json (every step's statistics) and prints a table of the means
// over the second half of the steps.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/check.h"
#include "core/file.h"
#include "train/grad_comm_study.h"

namespace fp8lm::cli {
namespace {

struct GradOptions {
  std::string name;  // grad-scaling | formats
  std::vector<int> ranks;
  int steps = 16;
  std::string data = "data/brown/train.bin";
  std::string out;
  // The simulated model: GPT-2's vocabulary (its LM head makes most of the gradient).
  int layers = 2, width = 64, seq = 64;  // heads of 32 dimensions
  std::string sum = "ring";  // order of the FP8 partial sums: ring | tree
};

nlohmann::json stats_json(const QuantStats& s) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"elements", s.n},        {"nonzero", s.nonzero},
          {"underflow", s.underflow_rate()}, {"saturated", s.saturation_rate()},
          {"snr_db", num(s.snr_db())}, {"mse", s.mse()}};
}

void run_grad_experiment(const GradOptions& o) {
  apply_global_options();
  GradCommStudy s;
  s.model.preset = "lab";
  s.model.n_layer = o.layers;
  s.model.n_head = std::max(1, o.width / 32);
  s.model.n_embd = o.width;
  s.model.seq_len = o.seq;
  s.model.vocab_size = 50257;
  s.model.validate();
  s.seq = static_cast<size_t>(o.seq);
  s.ranks = o.ranks;
  s.steps = o.steps;
  s.order = o.sum == "tree" ? dist::Fp8GradReducer::SumOrder::kTree
                            : dist::Fp8GradReducer::SumOrder::kRing;
  if (o.name == "grad-scaling") {
    s.modes = {dist::Fp8Scaling::kPre, dist::Fp8Scaling::kPost, dist::Fp8Scaling::kAuto,
               dist::Fp8Scaling::kSqrt};
    s.formats = {DType::kE4M3};
  } else {
    s.modes = {dist::Fp8Scaling::kAuto};
    s.formats = {DType::kE4M3, DType::kE5M2};
  }
  if (!std::filesystem::exists(o.data))
    fail(o.data, ": no such token file (run `bash scripts/run.sh` once, or fp8lm prepare)");
  const TokenFile train(o.data, s.model.vocab_size);
  std::printf("experiment %s: %d steps; model %d layers × %d wide, %d tokens per simulated rank; "
              "%s sums; ranks",
              o.name.c_str(), s.steps, o.layers, o.width, o.seq, o.sum.c_str());
  for (int n : s.ranks) std::printf(" %d", n);
  std::printf("\n");
  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::json losses = nlohmann::json::array();
  const std::vector<GradCommPoint> points = run_grad_comm_study(s, train, [&](int step, double loss) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("step %3d  loss %.4f  (%.0f s)\n", step, loss, secs);
    std::fflush(stdout);
    losses.push_back({{"step", step}, {"loss", loss}});
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Means per (N, mode, format) over the second half of the steps (auto's μ starts at 1 and
  // needs a few steps to find its level), in the order the points come.
  const int first = s.steps / 2;
  struct Row {
    int ranks;
    dist::Fp8Scaling mode;
    DType format;
    double snr = 0, underflow = 0, saturated = 0;
    int count = 0;
    float last_multiplier = 1;
  };
  std::vector<Row> rows;
  nlohmann::json pts = nlohmann::json::array();
  for (const GradCommPoint& p : points) {
    pts.push_back({{"step", p.step},
                   {"ranks", p.ranks},
                   {"mode", dist::fp8_scaling_name(p.mode)},
                   {"format", dtype_name(p.format)},
                   {"multiplier", p.multiplier},
                   {"stats", stats_json(p.stats)}});
    if (p.step < first) continue;
    Row* row = nullptr;
    for (Row& r : rows)
      if (r.ranks == p.ranks && r.mode == p.mode && r.format == p.format) row = &r;
    if (row == nullptr) row = &rows.emplace_back(Row{p.ranks, p.mode, p.format});
    row->snr += p.stats.snr_db();
    row->underflow += p.stats.underflow_rate();
    row->saturated += p.stats.saturation_rate();
    row->last_multiplier = p.multiplier;
    ++row->count;
  }
  nlohmann::json summary = nlohmann::json::array();
  std::printf("\nmeans over steps %d-%d (the averaged gradient of all tensors vs the exact mean)\n"
              "%5s %-5s %-6s %9s %11s %11s %12s\n",
              first, s.steps - 1, "N", "mode", "format", "SNR dB", "underflow %", "saturated %", "last m");
  for (const Row& r : rows) {
    const double c = r.count;
    std::printf("%5d %-5s %-6s %9.2f %11.4f %11.5f %12.6g\n", r.ranks,
                std::string(dist::fp8_scaling_name(r.mode)).c_str(),
                std::string(dtype_name(r.format)).c_str(), r.snr / c, 100 * r.underflow / c,
                100 * r.saturated / c, double{r.last_multiplier});
    summary.push_back({{"ranks", r.ranks},
                       {"mode", dist::fp8_scaling_name(r.mode)},
                       {"format", dtype_name(r.format)},
                       {"snr_db", r.snr / c},
                       {"underflow", r.underflow / c},
                       {"saturated", r.saturated / c},
                       {"last_multiplier", r.last_multiplier}});
  }
  const std::string out = o.out.empty() ? "runs/experiments/" + o.name : o.out;
  std::filesystem::create_directories(out);
  const nlohmann::json doc = {
      {"experiment", o.name},
      {"seconds", seconds},
      {"setup",
       {{"steps", s.steps}, {"ranks", s.ranks}, {"layers", o.layers}, {"width", o.width},
        {"heads", s.model.n_head}, {"tokens_per_rank", o.seq}, {"data", o.data},
        {"sum", o.sum}}},
      {"losses", losses},
      {"summary_from_step", first},
      {"summary", summary},
      {"points", pts}};
  write_text_atomic(out + "/experiment.json", doc.dump(1) + "\n");
  std::printf("\n%.0f s; wrote %s/experiment.json\n", seconds, out.c_str());
}

void add_grad_experiment(CLI::App& exp, const std::string& name, const std::string& help,
                         std::vector<int> ranks) {
  auto o = std::make_shared<GradOptions>();
  o->name = name;
  o->ranks = std::move(ranks);
  CLI::App* sub = exp.add_subcommand(name, help);
  sub->add_option("--ranks", o->ranks, "Simulated data-parallel rank counts")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub->add_option("--steps", o->steps, "Training steps")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  sub->add_option("--data", o->data, "Training token file")->capture_default_str();
  sub->add_option("--sum", o->sum, "Order of the FP8 partial sums: ring (one rank at a time) or "
                                   "tree (pairs of pairs)")
      ->check(CLI::IsMember({"ring", "tree"}))
      ->capture_default_str();
  sub->add_option("--out", o->out, "Output folder (default runs/experiments/NAME)");
  sub->add_option("--layers", o->layers, "Model layers")->check(CLI::Range(1, 48))->capture_default_str();
  sub->add_option("--width", o->width, "Model width")->check(CLI::Range(8, 4096))->capture_default_str();
  sub->add_option("--seq", o->seq, "Tokens per simulated rank and step")
      ->check(CLI::Range(2, 4096))
      ->capture_default_str();
  sub->callback([o] { run_grad_experiment(*o); });
}

}  // namespace

void register_grad_experiments(CLI::App& exp) {
  add_grad_experiment(exp, "grad-scaling",
                      "FP8 gradient all-reduce at N simulated ranks: pre / post / auto / sqrt "
                      "scaling, SNR, underflow and saturation over training (FP8-LM Fig. 7)",
                      {2, 8, 32, 128});
  add_grad_experiment(exp, "formats",
                      "E4M3 vs E5M2 gradients (cast and FP8 all-reduce, auto scaling) at N "
                      "simulated ranks",
                      {1, 2, 8, 32, 128});
}

}  // namespace fp8lm::cli
