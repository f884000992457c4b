// A training run's state (train/trainer.cc drives it): its inputs, every one checked before
// step 1, and its session: the model, the optimizer holding its masters, the frozen weights,
// the gradient averaging, telemetry and checkpoints; and resuming one from a checkpoint.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "data/loader.h"
#include "data/tokenizer.h"
#include "distributed/grid.h"
#include "model/gpt.h"
#include "optim/adamw.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/grad_sync.h"
#include "train/post_train.h"
#include "train/pp_comm.h"
#include "train/run_folder.h"
#include "train/telemetry.h"
#include "train/tp_comm.h"
#include "train/zero_replica.h"

namespace fp8lm {

// Phase 2 of a run (train/trainer.cc): every input the run will read, checked before step 1
// (a bad validation file must not surface after hours of training).
struct Inputs {
  Inputs(const TrainConfig& cfg, const GptConfig& mcfg, bool lead);
  std::unique_ptr<DataSource> train, val;  // lm and dpo
  GrpoPrompts prompts, val_prompts;        // grpo
  std::unique_ptr<Rewards> rewards, val_rewards;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Phase 3 of a run: what trains: the model, the optimizer that owns its masters (O3:
// sharded, with replicated weights; tensor parallelism: this rank's shards) and the gradient
// averaging of the level over the data-parallel group.
struct Session {
  // `from`: the starting weights (train.init_from; null: GPT-2's initialisation), of the
  // optimizer's masters unless `resuming` (the checkpoint's come next) and of the reference
  // model of DPO and GRPO.
  Session(const TrainConfig& c, const GptConfig& m, const dist::Grid& g,
          const PretrainedWeights* from, bool resuming);

  // How the optimizer's per-tensor figures combine across ranks: O3's owners each hold whole
  // tensors (sum over the data-parallel group); tensor-parallel shards hold parts of the
  // split tensors and copies of the others (sum the split ones' squares over the tp group,
  // count the copies once; shared scales: max of the amaxes over the tp group). Pipeline
  // stages add their norms, the tied wte counted on the first stage only.
  void set_reductions();

  AmaxShare tp_amax_share();

  // Every stage's tensors and O3 owners (as each stage places them), for checkpoints.
  StateLayout layout() const;

  // Telemetry samples the lead rank's casts on every telemetry.every-th step.
  // Telemetry steps (every rank: collectives that measure run on all of them); rank 0 records.
  bool telemetry_step(int64_t step) const {
    return cfg.telemetry_every > 0 && (step + 1) % cfg.telemetry_every == 0;
  }
  bool samples(int64_t step) const { return rank == 0 && telemetry_step(step); }

  // The model reads live views of the masters (or of O3's replicas, rebuilt after each update
  // by refresh_replicas): the optimizer's in-place updates need no new set_weights.
  void bind_weights();
  bool lora() const { return cfg.lora_rank > 0; }
  void refresh_replicas() {
    if (replica) replica->refresh(*opt);
  }

  TrainerState state(int64_t done);

  // Every layer's scaling states on rank 0, in layer order: each later stage's lead rank
  // (tp 0, dp 0; its stage's ranks share the states) sends its layers'.
  nlohmann::json stage_scaling();

  void checkpoint(const std::string& out, int64_t done);

  const TrainConfig& cfg;
  const GptConfig mcfg;
  const PrecisionLevel level;
  const dist::Grid grid;
  const int world, rank;  // of the whole job
  GroupTpComm tp_comm;
  GroupPpComm pp_comm;
  Gpt model;
  std::unique_ptr<FrozenWeights> frozen;  // LoRA's base; DPO's and GRPO's reference
  std::string base, base_fingerprint;     // their file (absolute); LoRA: its fingerprint
  std::unique_ptr<ReferenceModel> ref;    // DPO and GRPO: a model on the frozen weights
  std::unique_ptr<ZeroReplica> replica;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<GradSync> sync;
  QuantProbe probe;
  TelemetrySummary telemetry;
  // Pipeline: seconds of the steps' schedules, and of them waiting for the neighbours.
  double pipe_busy = 0, pipe_idle = 0;
  Alarms alarms{AlarmLimits{cfg.underflow_alarm, cfg.saturation_alarm, cfg.kurtosis_alarm,
                            cfg.loss_spike_alarm}};

  // A divergence alarm (lead rank): a warning on the console, or the end of the run with
  // telemetry.stop_on_alarm (the last checkpoint stays as it is).
  void alarm(const std::string& message, const std::string& out, bool tty) const;
};

// Phase 4 of a run: a checkpoint's state, every part validated before it is used; returns
// its step.
int64_t resume(Session& s, const std::string& resume_from, RunFolder* folder);

}  // namespace fp8lm
