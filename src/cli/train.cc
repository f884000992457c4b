// fp8lm train | eval | merge | sample (one prompt, or a JSONL file of them with exact-match accuracy).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/check.h"
#include "core/file.h"
#include "train/completion.h"
#include "train/model_values.h"
#include "train/trainer.h"

namespace fp8lm::cli {
namespace {

struct TrainOptions {
  std::string config;
  std::vector<std::string> sets;
  std::string resume;
  bool overwrite = false;
};

void run_train(const TrainOptions& o) {
  apply_global_options();
  TrainConfig cfg;
  if (!o.config.empty()) cfg = parse_train_config(read_text_file(o.config, 1 << 20), o.config);
  apply_overrides(cfg, o.sets);
  train(cfg, o.resume, o.overwrite);
}

struct EvalOptions {
  std::string checkpoint, data;
  int batches = 8, batch_size = 0;
};

struct SampleOptions {
  std::string checkpoint, prompt = "The";
  std::string prompts, out;  // JSONL prompts to complete, and where the completions go
  int batch = 8;
  int tokens = 64;
  double temperature = 0.8;
  uint64_t seed = 1;
};

}  // namespace

void register_train(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* sub = app.add_subcommand(
      "train", "Train a GPT (with no arguments: a small GPT on the Brown corpus at level O2)");
  sub->add_option("--config", o->config, "TOML file with [model], [data], [train], [precision]");
  sub->add_option("--set", o->sets, "Override one key: section.key=value (repeatable)");
  sub->add_option("--resume", o->resume,
                  "Continue from a checkpoint folder, or a run folder's latest checkpoint");
  sub->add_flag("--overwrite", o->overwrite,
               "Start afresh in a train.out_dir that already holds a run (its files are deleted)");
  sub->callback([o] { run_train(*o); });

  auto e = std::make_shared<EvalOptions>();
  CLI::App* ev = app.add_subcommand("eval", "Mean token loss of a checkpoint on a token file");
  ev->add_option("--checkpoint", e->checkpoint, "Checkpoint or run folder")->required();
  ev->add_option("--data", e->data, "Token file (.bin)")->required();
  ev->add_option("--batches", e->batches, "Sequential batches")->check(CLI::Range(1, 1 << 30))
      ->capture_default_str();
  ev->add_option("--batch-size", e->batch_size, "Sequences per batch (default: the run's)")
      ->check(CLI::Range(1, 1 << 20));
  ev->callback([e] {
    apply_global_options();
    const double loss =
        evaluate_checkpoint(e->checkpoint, e->data, e->batches, e->batch_size, 0);
    std::printf("{\"loss\": %.8f}\n", loss);
  });

  auto m = std::make_shared<std::pair<std::string, std::string>>();  // checkpoint, out
  CLI::App* me = app.add_subcommand(
      "merge", "Write a checkpoint's model as a Hugging Face GPT-2 folder (model.safetensors, "
               "config.json), LoRA adapters merged into the base");
  me->add_option("--checkpoint", m->first, "Checkpoint or run folder")->required();
  me->add_option("--out", m->second, "Folder to write")->required();
  me->callback([m] {
    apply_global_options();
    export_model(m->first, m->second);
    std::printf("wrote %s/model.safetensors and %s/config.json\n", m->second.c_str(),
                m->second.c_str());
  });

  auto s = std::make_shared<SampleOptions>();
  CLI::App* sa = app.add_subcommand("sample", "Generate text from a checkpoint");
  sa->add_option("--checkpoint", s->checkpoint, "Checkpoint or run folder")->required();
  sa->add_option("--prompt", s->prompt, "Text to continue")->capture_default_str();
  sa->add_option("--tokens", s->tokens, "Tokens to generate")->check(CLI::Range(1, 100000))
      ->capture_default_str();
  sa->add_option("--temperature", s->temperature, "0: greedy")->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  sa->add_option("--seed", s->seed, "Sampling seed")->capture_default_str();
  sa->add_option("--prompts", s->prompts,
                 "JSONL of {\"prompt\"[, \"response\" or \"answer\"]}: complete each (after "
                 "<|endoftext|>, as fine-tuning renders prompts) and report exact-match accuracy");
  sa->add_option("--out", s->out, "With --prompts: write the completions here (JSONL)");
  sa->add_option("--batch", s->batch, "With --prompts: prompts per forward")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sa->callback([s] {
    apply_global_options();
    if (!s->prompts.empty()) {
      CompletionOptions c;
      c.max_new_tokens = s->tokens;
      c.temperature = s->temperature;
      c.seed = s->seed;
      const TaskScore r = complete_checkpoint(s->checkpoint, s->prompts, s->out, c, s->batch);
      std::printf("{\"prompts\": %zu, \"with_reference\": %zu, \"exact\": %zu, \"exact_match\": %.6f}\n",
                  r.prompts, r.with_reference, r.exact, r.accuracy());
      return;
    }
    if (!s->out.empty()) fail("--out: only with --prompts");
    std::printf("%s\n",
                sample_checkpoint(s->checkpoint, s->prompt, s->tokens, s->temperature, s->seed)
                    .c_str());
  });
}

}  // namespace fp8lm::cli
