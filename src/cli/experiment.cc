// fp8lm experiment NAME: the FP8-LM paper's experiments as one command each (docs/experiments.md).
//   zero-placement: per-rank optimizer-state memory of O3's greedy whole-tensor placement vs
//   an element-split ZeRO, for GPT-2 presets and the paper's 7B/13B/175B shapes, at 2..128
//   ranks (computed from the layouts: no training).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/check.h"
#include "core/file.h"
#include "distributed/zero.h"
#include "model/config.h"
#include "model/params.h"
#include "tensor/precision_plan.h"

namespace fp8lm::cli {
namespace {

// The paper's model shapes (GPT-3 family widths and depths; GPT-2's vocabulary, 2048 tokens).
GptConfig paper_shape(const char* name, int layers, int heads, int width) {
  GptConfig c;
  c.preset = name;
  c.n_layer = layers;
  c.n_head = heads;
  c.n_embd = width;
  c.seq_len = 2048;
  c.vocab_size = 50257;
  return c;
}

struct ZeroOptions {
  bool json = false;
  std::string out = "runs/experiments/zero-placement";
  std::vector<int> ranks = {2, 4, 8, 16, 32, 64, 128};
};

void run_zero_placement(const ZeroOptions& o) {
  apply_global_options();
  const std::vector<GptConfig> models = {
      gpt_preset("gpt2"),         gpt_preset("gpt2-medium"),       gpt_preset("gpt2-large"),
      gpt_preset("gpt2-xl"),      paper_shape("7B", 32, 32, 4096), paper_shape("13B", 40, 40, 5120),
      paper_shape("175B", 96, 96, 12288)};
  const StateFormats f = level_plan(PrecisionLevel::kO3).states;
  const int64_t per_elem =
      static_cast<int64_t>(dtype_size(f.master) + dtype_size(f.m1) + dtype_size(f.m2));
  const double gb = 1e9;
  nlohmann::json rows = nlohmann::json::array();
  if (!o.json)
    std::printf("O3 optimizer states (master %s + m1 %s + m2 %s = %lld B/param) per rank\n"
                "%-12s %8s %7s %5s %10s %10s %10s %8s %9s\n",
                std::string(dtype_name(f.master)).c_str(), std::string(dtype_name(f.m1)).c_str(),
                std::string(dtype_name(f.m2)).c_str(), static_cast<long long>(per_elem), "model",
                "params", "tensors", "N", "split GB", "greedy max", "greedy min", "max/min",
                "max/split");
  for (const GptConfig& m : models) {
    std::vector<int64_t> bytes;
    int64_t total = 0;
    for (const ParamSpec& s : param_layout(m)) {
      bytes.push_back(static_cast<int64_t>(s.numel()) * per_elem);
      total += bytes.back();
    }
    for (int n : o.ranks) {
      const dist::Placement p = dist::placement(bytes, n);
      const auto [lo, hi] = std::minmax_element(p.rank_bytes.begin(), p.rank_bytes.end());
      // Element-split ZeRO: ceil(total / n) bytes on the fullest rank (tensors cut anywhere).
      const double split = static_cast<double>((total + n - 1) / n);
      const double ratio = *lo > 0 ? static_cast<double>(*hi) / static_cast<double>(*lo) : -1;
      rows.push_back({{"model", m.preset},
                      {"params", m.num_params()},
                      {"tensors", bytes.size()},
                      {"ranks", n},
                      {"split_bytes", split},
                      {"greedy_max_bytes", *hi},
                      {"greedy_min_bytes", *lo},
                      {"max_over_min", ratio < 0 ? nlohmann::json(nullptr) : nlohmann::json(ratio)},
                      {"max_over_split", static_cast<double>(*hi) / split}});
      if (!o.json) {
        char r[16] = "inf";  // a rank without any tensor
        if (ratio >= 0) std::snprintf(r, sizeof r, "%.3f", ratio);
        std::printf("%-12s %7.2fB %7zu %5d %10.3f %10.3f %10.3f %8s %9.3f\n", m.preset.c_str(),
                    static_cast<double>(m.num_params()) / 1e9, bytes.size(), n, split / gb,
                    static_cast<double>(*hi) / gb, static_cast<double>(*lo) / gb, r,
                    static_cast<double>(*hi) / split);
      }
    }
  }
  const nlohmann::json doc = {
      {"experiment", "zero-placement"}, {"bytes_per_param", per_elem}, {"rows", rows}};
  if (o.json) std::printf("%s\n", doc.dump(2).c_str());
  if (!o.out.empty()) {
    std::filesystem::create_directories(o.out);
    write_text_atomic(o.out + "/experiment.json", doc.dump(1) + "\n");
    if (!o.json) std::printf("wrote %s/experiment.json\n", o.out.c_str());
  }
}

}  // namespace

void register_experiment(CLI::App& app) {
  CLI::App* exp = app.add_subcommand("experiment", "The FP8-LM paper's experiments");
  exp->require_subcommand(1);
  auto z = std::make_shared<ZeroOptions>();
  CLI::App* sub = exp->add_subcommand(
      "zero-placement",
      "O3's greedy whole-tensor placement vs element-split ZeRO: optimizer-state bytes per "
      "rank for GPT-2 presets and the paper's 7B/13B/175B shapes (no training)");
  sub->add_flag("--json", z->json, "Print JSON");
  sub->add_option("--out", z->out, "Output folder (experiment.json; empty: none)")
      ->capture_default_str();
  sub->add_option("--ranks", z->ranks, "Rank counts")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->callback([z] { run_zero_placement(*z); });
  register_grad_experiments(*exp);
  register_decoupling_experiment(*exp);
}

}  // namespace fp8lm::cli
