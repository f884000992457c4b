// Checkpoints: checkpoints/step-N/ with model.safetensors (Hugging Face GPT-2 names, F32
// master values; LoRA runs: adapters.safetensors, the base being train.init_from), optimizer.safetensors (states in their native dtypes, with scales) and
// trainer.json (step, configuration, scaling state). A checkpoint is written into a hidden
// temporary folder and renamed into place only when complete, so a crash mid-write never
// touches the last complete checkpoint.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/lora.h"
#include "model/params.h"
#include "optim/adamw.h"
#include "tensor/scaling.h"

namespace fp8lm {

// Where the optimizer's states live when rank 0 does not hold them all. Ranks are placed as
// the grid places them (distributed/grid.h): rank = (dp_rank · pp + pp_rank) · tp + tp_rank.
struct StateLayout {
  // Per pipeline stage (one entry without a pipeline): a tensor-parallel rank's specs of the
  // stage's tensors (param_layout; every tp rank's have the same shapes), and O3's owners of
  // them (the data-parallel rank keeping each; empty: every rank keeps all).
  std::vector<std::vector<ParamSpec>> stage_specs;
  std::vector<std::vector<int>> stage_owner;
  // This rank's place. The shards of one tensor share one scale (AdamW keeps them so), so
  // whole tensors are their shards side by side. The tied wte is written from stage 0.
  TpShard tp;
  PpStage pp;
  // LoRA: the adapters the optimizer holds instead of the model's tensors; the checkpoint
  // then has adapters.safetensors (their F32 values) in place of model.safetensors.
  std::vector<ParamSpec> adapters;
  bool sharded() const {
    if (tp.size > 1 || pp.size > 1) return true;
    for (const auto& o : stage_owner)
      if (!o.empty()) return true;
    return false;
  }
};

// Writes out_dir/checkpoints/step-N atomically; returns its path. With the environment
// variable FP8LM_TEST_CRASH_IN_CHECKPOINT set (tests), the process aborts after the first
// file, to exercise interrupted checkpoints.
// model.safetensors holds the optimizer's master values converted to F32 tensor by tensor
// (no full-size copy). With a sharded `layout` (on rank 0), the states of tensors other
// ranks own (O3) and the other tensor-parallel shards are received one at a time while
// writing: those ranks call send_checkpoint_states at the same step. The format does not
// depend on the layout.
std::string save_checkpoint(const std::string& out_dir, int64_t step, const GptConfig& cfg,
                            const AdamW& opt, const nlohmann::json& trainer,
                            const StateLayout& layout = {});
// What a rank other than 0 sends while rank 0 writes: the states of the tensors it keeps
// (its pipeline stage; O3: its data-parallel rank owns them, otherwise data-parallel rank 0
// holds them all) — its shard of each split tensor, the whole of the others from
// tensor-parallel rank 0.
void send_checkpoint_states(const GptConfig& cfg, const AdamW& opt, const StateLayout& layout);

// Removes out_dir/checkpoints/.step-* (temporary folders of interrupted writes).
void remove_stale_checkpoint_temps(const std::string& out_dir);

// A checkpoint folder, or a run folder (meaning its latest complete checkpoint).
std::string resolve_checkpoint(const std::string& path);

// trainer.json: the training state that is not in the safetensors files. It is written and
// read only here; reading checks every field's type and range (a checkpoint is untrusted
// input), so a bad file is an Error naming the file and the field.
struct TrainerState {
  int64_t step = 0;  // optimizer steps done (steps + skipped of optimizer.safetensors)
  int64_t seed = 0;
  std::string level;
  int batch_size = 1, grad_accum = 1;
  std::string train_path;
  GptConfig model;
  std::string recipe = "delayed";
  int amax_window = 16, margin = 0;
  std::string mx_grad_format = "e4m3";
  std::string lm_head = "f32";  // precision.lm_head (absent in earlier checkpoints: f32)
  std::string tokenizer = "gpt2", tokenizer_dir;
  int world_size = 1;
  float grad_scaling_mu = 1.0f;
  nlohmann::json scaling = nlohmann::json::array();  // one scaling_to_json per model meta
  // LoRA: the adapters' settings, and the frozen base (train.init_from's file, absolute)
  // with its file_fingerprint in hex (a base changed since is an error, not other weights).
  LoraSpec lora;
  std::string base, base_fingerprint;
};
nlohmann::json trainer_json(const TrainerState& s);
// Reads and validates dir/trainer.json; `step` must match a step-N folder name.
TrainerState read_trainer_state(const std::string& dir);
// Restores the model's scaling states from s.scaling (counts and each state validated).
void restore_scaling(const TrainerState& s, const std::vector<ScalingMeta*>& metas,
                     const std::string& dir);

// Reads trainer.json of a checkpoint folder as JSON (errors name the file).
nlohmann::json read_trainer_json(const std::string& dir);
// The model configuration recorded in trainer.json (`where`: the checkpoint folder).
GptConfig model_config_of(const nlohmann::json& trainer, const std::string& where);
// Loads optimizer.safetensors into `opt` (shapes and state formats must match; O2 and O3
// checkpoints are interchangeable); O3 loads only the tensors this rank owns; with
// tensor-parallel `shards` (this rank's specs) each rank takes its shard of every tensor.
void load_optimizer(const std::string& dir, AdamW& opt, const std::vector<ParamSpec>& shards = {},
                    TpShard tp = {});

nlohmann::json scaling_to_json(const ScalingMeta& m);
// Restores one scaling state, checking types, ranges and the invariants that tie the ring
// buffer's position and fill to the counters (a state no run could produce is an Error).
void scaling_from_json(const nlohmann::json& j, ScalingMeta& m, const std::string& where);

// Every number read back from a checkpoint's states must be finite, and every scale_inv
// finite and > 0 (a NaN, zero or negative scale from disk would poison the run).
void check_state_values(const std::string& path, const std::string& name, const void* data,
                        DType dtype, size_t numel, float scale_inv);

}  // namespace fp8lm
