// fp8lm experiment precision-decoupling (docs/experiments.md): the FP8-LM paper's Tab. 6 rows
// as training runs of one model on the same data, differing only in the GEMM formats and the
// storage of the optimizer's master weights and moments (precision.level, precision.master/
// m1/m2). Each row is a run folder OUT/ID; OUT/experiment.json collects the loss curves,
// final losses and bytes per parameter.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/check.h"
#include "core/file.h"
#include "train/trainer.h"

namespace fp8lm::cli {
namespace {

struct DecouplingRow {
  const char* id;
  const char* what;
  const char* level;
  const char* master;
  const char* m1;
  const char* m2;
};

// The paper's rows (its Tab. 6 numbering). "level": the level's own format.
constexpr DecouplingRow kRows[] = {
    {"0", "FP32 GEMMs and states", "fp32", "level", "level", "level"},
    {"1", "BF16 GEMMs, FP32 states", "bf16", "level", "level", "level"},
    {"2a", "FP8 GEMMs; FP16+scale master, FP8 m1, FP16 m2 (O2)", "O2", "level", "level", "level"},
    {"2b", "as 2a with a BF16 master", "O2", "bf16", "level", "level"},
    {"3", "as 2a with an FP8 (E4M3) master", "O2", "e4m3", "level", "level"},
    {"4", "as 2a with an FP8 (E4M3) m2", "O2", "level", "level", "e4m3"},
};

// The experiment's model and run (overridable with --set): a 2-layer, 256-wide GPT on the
// default corpus, so all six rows train in minutes on two cores.
const std::vector<std::string> kDefaults = {
    "model.n_layer=2",       "model.n_embd=256",       "model.n_head=4",
    "train.batch_size=8",    "train.steps=50",         "train.warmup_steps=10",
    "train.eval_every=10",   "train.checkpoint_every=0"};

struct DecouplingOptions {
  std::vector<std::string> sets;
  std::string out = "runs/experiments/precision-decoupling";
  std::vector<std::string> rows;  // ids; empty: all
};

nlohmann::json read_metrics(const std::string& path) {
  nlohmann::json out = nlohmann::json::array();
  std::istringstream in(read_text_file(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

void run_decoupling(const DecouplingOptions& o) {
  apply_global_options();
  for (const std::string& id : o.rows) {
    bool known = false;
    for (const DecouplingRow& r : kRows) known |= id == r.id;
    if (!known) fail("--rows: unknown row '", id, "' (known: 0, 1, 2a, 2b, 3, 4)");
  }
  std::filesystem::create_directories(o.out);
  nlohmann::json rows = nlohmann::json::array();
  const auto t0 = std::chrono::steady_clock::now();
  for (const DecouplingRow& r : kRows) {
    if (!o.rows.empty() && std::find(o.rows.begin(), o.rows.end(), r.id) == o.rows.end())
      continue;
    TrainConfig cfg;
    std::vector<std::string> sets = kDefaults;
    sets.insert(sets.end(), o.sets.begin(), o.sets.end());
    const std::string dir = o.out + "/" + r.id;
    for (const std::string& s :
         {std::string("precision.level=") + r.level, std::string("precision.master=") + r.master,
          std::string("precision.m1=") + r.m1, std::string("precision.m2=") + r.m2,
          "train.out_dir=" + dir})
      sets.push_back(s);
    apply_overrides(cfg, sets);
    std::printf("\n== row #%s: %s\n", r.id, r.what);
    std::fflush(stdout);
    const auto r0 = std::chrono::steady_clock::now();
    const TrainResult res = train(cfg, "", /*overwrite=*/true);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
    const nlohmann::json summary = nlohmann::json::parse(read_text_file(dir + "/summary.json"));
    rows.push_back({{"id", r.id},
                    {"what", r.what},
                    {"level", r.level},
                    {"master", r.master},
                    {"m1", r.m1},
                    {"m2", r.m2},
                    {"run", r.id},
                    {"seconds", secs},
                    {"final_train_loss", res.final_train_loss},
                    {"final_val_loss", res.final_val_loss},
                    {"bytes_per_param", summary.value("bytes_per_param", nlohmann::json::object())},
                    {"metrics", read_metrics(dir + "/metrics.jsonl")}});
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n%-4s %-52s %10s %10s %9s %8s\n", "row", "formats", "train", "val", "vs #0",
              "B/param");
  double base = 0;  // row #0's validation loss, when it ran
  for (const nlohmann::json& row : rows) {
    const double val = row["final_val_loss"].get<double>();
    if (row["id"] == "0") base = val;
    char rel[32] = "";
    if (base > 0) std::snprintf(rel, sizeof rel, "%+.2f%%", 100 * (val / base - 1));
    std::printf("%-4s %-52s %10.4f %10.4f %9s %8.2f\n", row["id"].get<std::string>().c_str(),
                row["what"].get<std::string>().c_str(), row["final_train_loss"].get<double>(), val,
                rel, row["bytes_per_param"].value("model_states", 0.0));
  }
  std::vector<std::string> all_sets = kDefaults;
  all_sets.insert(all_sets.end(), o.sets.begin(), o.sets.end());
  write_text_atomic(o.out + "/experiment.json",
                    nlohmann::json{{"experiment", "precision-decoupling"},
                                   {"seconds", seconds},
                                   {"setup", {{"sets", all_sets}}},
                                   {"rows", rows}}
                            .dump(1) +
                        "\n");
  std::printf("\n%.0f s; wrote %s/experiment.json (runs in %s/ID)\n", seconds, o.out.c_str(),
              o.out.c_str());
}

}  // namespace

void register_decoupling_experiment(CLI::App& exp) {
  auto o = std::make_shared<DecouplingOptions>();
  CLI::App* sub = exp.add_subcommand(
      "precision-decoupling",
      "FP8-LM Tab. 6: FP32 / BF16 / O2 and O2 with a BF16 master, an FP8 master or an FP8 m2, "
      "trained on the same data; loss curves and final losses");
  sub->add_option("--set", o->sets, "Config override for every row (KEY=VALUE, repeatable)");
  sub->add_option("--rows", o->rows, "Rows to run (0 1 2a 2b 3 4; default all)")->delimiter(',');
  sub->add_option("--out", o->out, "Output folder")->capture_default_str();
  sub->callback([o] { run_decoupling(*o); });
}

}  // namespace fp8lm::cli
