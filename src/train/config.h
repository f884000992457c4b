// Training configuration: TOML sections model / data / train / precision, an embedded
// default (a small GPT on the Brown corpus at level O2), overrides by `--set key=value`.
// Unknown keys and bad values are errors naming the key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/lora.h"
#include "model/tensor_parallel.h"
#include "optim/adamw.h"

namespace fp8lm {

// precision.lm_head's value as the LM head's operand dtype for a level computing in
// `compute`: bf16, f32, or level (bf16 at the bf16 and FP8 levels, as FP8-LM keeps its output
// layer in BF16; f32 at fp32). Values are checked where they are read.
inline DType lm_head_dtype(const std::string& name, ComputeMode compute) {
  if (name == "level") return compute == ComputeMode::kF32 ? DType::kF32 : DType::kBF16;
  return name == "bf16" ? DType::kBF16 : DType::kF32;
}

struct TrainConfig {
  // [model]: a preset, optionally with its sizes overridden.
  std::string preset = "d6";
  int n_layer = 0, n_head = 0, n_embd = 0, seq_len = 128;  // 0: the preset's
  // [data]
  std::string train_path = "data/brown/train.bin";
  std::string val_path = "data/brown/val.bin";
  std::string tokenizer = "gpt2";
  std::string tokenizer_dir;  // empty: the GPT-2 tables scripts/setup.sh fetched
  // [train]
  // The default run fits 10 minutes on a 2-core AVX2 machine: 80 steps of 16×128 tokens of
  // d6 are 30 TFLOP of model FLOPs, 8.5 minutes at 75% of the FMA peak of a 2-core Zen 1
  // EPYC, the slowest AVX2 machine measured (docs/performance.md). BENCHMARKS.md's longer
  // runs set train.steps=350, train.warmup_steps=30.
  int batch_size = 16;
  int grad_accum = 1;
  int steps = 80;
  double lr = 1e-3;
  double min_lr = 1e-4;
  int warmup_steps = 8;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95;
  double grad_clip = 1.0;
  int eval_every = 40;
  int eval_batches = 4;
  int checkpoint_every = 40;
  int64_t seed = 1337;
  // Starting weights (docs/post_training.md): an fp8lm checkpoint or run folder, or a Hugging
  // Face GPT-2 model.safetensors; the model's shape comes from it (model.seq_len may be
  // shorter than its positions). Empty: GPT-2's random initialisation.
  std::string init_from;
  std::string out_dir = "runs/default";
  int threads = 0;
  double comm_timeout = 900;  // seconds a rank waits for the others in one call (0: no bound)
  // [parallel] (docs/parallelism.md): tensor-parallel ranks per stage and pipeline stages per
  // model copy; the others of the world (mpirun -n N) are data-parallel, dp = N / (tp · pp).
  int tp = 1;
  int pp = 1;
  std::string pp_wire = "bf16";  // activations between stages: bf16 | e4m3 | f32 (fp32: f32)
  bool sequence = true;        // sequence parallelism within the tp group
  std::string gather = "level";  // SP → TP gathers: level (e4m3 in fp8) | bf16
  std::string wire = "bf16";     // TP → SP reduce-scatters, backward gathers: bf16 | f32
  // [precision]
  std::string level = "O2";
  // delayed | jit: per-tensor scales of activations and output gradients (history or just in
  // time); block: 1×128 tiles and 128×128 weight blocks; mxfp8: MX 1×32 blocks, e8m0 scales.
  std::string recipe = "delayed";
  std::string mx_grad_format = "e4m3";  // mxfp8: output gradients in e4m3 or e5m2
  int amax_window = 16;
  int margin = 0;
  std::string grad_scaling = "auto";  // auto | pre | post | sqrt (FP8 all-reduce, docs/numerics.md)
  // Optimizer-state storage other than the level's (the precision-decoupling ablations,
  // docs/experiments.md): level | f32 | f16 | bf16 | e4m3 each; not at O3.
  std::string master_format = "level", m1_format = "level", m2_format = "level";
  // The LM head's operands: level | f32 | bf16 (cast while packed; the dot kernel where the
  // CPU has AVX512-BF16, the same bits everywhere; Gpt::set_lm_head). A resumed run keeps its
  // checkpoint's unless this is set.
  std::string lm_head = "level";
  // [telemetry]: statistics of every FP8 cast on every `every`-th step (0: off), written to
  // telemetry.jsonl (docs/telemetry.md).
  int telemetry_every = 25;
  // Each FP8 cast also made another way from the same values (docs/telemetry.md, what if):
  // none | e4m3 | e5m2 | tensor | 1x128 | 128x128 | mx32.
  std::string what_if = "none";
  // Divergence alarms (warnings naming the tensor, once per tensor and kind; stop_on_alarm
  // ends the run instead): a cast's underflow or saturation fraction above these, an
  // activation's kurtosis grown by this factor since its first sample, a loss this many
  // times the mean of the previous 20 (checked every step).
  double underflow_alarm = 0.25;
  double saturation_alarm = 0.001;
  double kurtosis_alarm = 8;
  double loss_spike_alarm = 1.5;
  bool stop_on_alarm = false;
  // [finetune] (docs/post_training.md): the training objective — lm (next-token
  // cross-entropy: pre-training, and supervised fine-tuning on example files), dpo
  // (preference pairs prepared from {"prompt", "chosen", "rejected"}), grpo (a JSONL prompt
  // file with rewards) — and their settings. dpo and grpo need train.init_from (the policy's
  // starting weights and the frozen reference) and no pipeline.
  std::string objective = "lm";
  double beta = 0.1;          // DPO: β of the implicit reward β·log(π/π_ref)
  int samples = 8;            // GRPO: completions per prompt (train.batch_size / samples prompts)
  double clip = 0.2;          // GRPO: the ratio's interval [1 − clip, 1 + clip]
  double kl = 0.04;           // GRPO: weight of the KL to the reference
  double temperature = 1.0;   // GRPO: sampling temperature (0: greedy)
  int max_new_tokens = 16;    // GRPO: tokens a completion may add (its <|endoftext|> ends it)
  std::string reward_command; // GRPO: an external scorer (rewards.h); empty: answer/pattern
  // LoRA (model/lora.h): adapters of this rank on the targeted Linear layers train, the
  // train.init_from weights stay frozen (in E4M3 at the fp8 levels); 0: full training.
  int lora_rank = 0;
  double lora_alpha = 16;            // the adapters' scale is lora_alpha / lora_rank
  std::string lora_targets = "all";  // all, or attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj

  // The preset with overrides applied, or the shape of train.init_from; validated.
  GptConfig model() const;
  TpOptions tp_options() const;
  bool dpo() const { return objective == "dpo"; }
  bool grpo() const { return objective == "grpo"; }
  LoraSpec lora() const;
  // The pipeline's wire format (f32 when the level computes in fp32).
  DType pp_wire_dtype() const;
  PrecisionLevel precision_level() const { return level_from_name(level); }
  // The level's state formats with precision.master/m1/m2 applied; nullopt when none is set.
  std::optional<StateFormats> state_formats() const;
  DType lm_head_operands() const {
    return lm_head_dtype(lm_head, level_plan(precision_level()).compute);
  }
  // Checks every value; throws Error naming the first bad key.
  void validate() const;
  // Resolved configuration as TOML text (every key).
  std::string to_toml() const;
  // data.tokenizer_dir, or the default location of the GPT-2 tables when it is empty.
  std::string tokenizer_path() const;
};

// Where scripts/setup.sh puts GPT-2's encoder.json and vocab.bpe (the source tree's
// data/gpt2), so commands find them from any working folder.
std::string default_tokenizer_dir();

// Parses TOML text (`origin` names it in errors) over the defaults.
TrainConfig parse_train_config(const std::string& text, const std::string& origin);
// Applies "section.key=value" overrides in order; on an Error, cfg is left unchanged.
void apply_overrides(TrainConfig& cfg, const std::vector<std::string>& sets);

}  // namespace fp8lm
