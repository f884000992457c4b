#include "train/session.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "core/check.h"
#include "core/memory.h"
#include "distributed/collectives.h"
#include "distributed/world.h"
#include "train/gpt_state.h"
#include "train/model_values.h"

namespace fp8lm {
namespace {

std::string fmt_gib(double g) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", g);
  return buf;
}

// Fails early, with the figures, when the run cannot fit: the model (allocated, most pages
// not yet touched, and any frozen weights) plus the optimizer states about to be allocated
// for `trainable` (this rank's tensors, or LoRA's adapters), against what this process has
// plus what the machine can still give.
void check_memory(const GptConfig& mcfg, PrecisionLevel level, const StateFormats& f,
                  const std::vector<ParamSpec>& trainable) {
  size_t numel = 0, largest = 0;
  for (const ParamSpec& s : trainable) {
    numel += s.numel();
    largest = std::max(largest, s.numel());
  }
  // States, and the FP32 values of one tensor while narrow masters are initialised.
  const size_t states = numel * (dtype_size(f.master) + dtype_size(f.m1) + dtype_size(f.m2)) +
                        (f.master == DType::kF32 ? 0 : largest * sizeof(float));
  const size_t model = static_cast<size_t>(mem_stats_total().current);
  const size_t avail = available_memory_bytes();
  if (avail == 0) return;  // unknown: let the allocations speak
  const size_t have = avail + resident_bytes();
  auto gib = [](size_t b) { return static_cast<double>(b) / (1 << 30); };
  if (states + model > have)
    fail(mcfg.preset.empty() ? std::string("the model") : "model " + mcfg.preset, " at level ",
         level_name(level), " needs ", fmt_gib(gib(states + model)), " GiB (optimizer states ",
         fmt_gib(gib(states)), ", gradients + activations + workspace ", fmt_gib(gib(model)),
         ") but ", fmt_gib(gib(have)),
         " GiB are available; use a smaller model or batch, or a "
         "lower precision level (O2 keeps 6 bytes per parameter)");
}

}  // namespace

Inputs::Inputs(const TrainConfig& cfg, const GptConfig& mcfg, bool lead) {
  const size_t B = static_cast<size_t>(cfg.batch_size), T = static_cast<size_t>(mcfg.seq_len);
  // The closing sample decodes with the tokenizer, GRPO on every rank: a missing one is
  // found now.
  if (lead || cfg.grpo()) {
    tokenizer = make_tokenizer(cfg.tokenizer, cfg.tokenizer_path());
    if (tokenizer->vocab_size() > mcfg.vocab_size)
      fail("data.tokenizer = ", cfg.tokenizer, ": its ", tokenizer->vocab_size(),
           " ids do not fit model.vocab_size ", mcfg.vocab_size, " (preset ", mcfg.preset, ")");
  }
  if (cfg.grpo()) {
    prompts = read_grpo_prompts(cfg.train_path, *tokenizer, T, cfg.max_new_tokens);
    val_prompts = read_grpo_prompts(cfg.val_path, *tokenizer, T, cfg.max_new_tokens);
    rewards = std::make_unique<Rewards>(prompts.lines, cfg.reward_command);
    val_rewards = std::make_unique<Rewards>(val_prompts.lines, cfg.reward_command);
    return;
  }
  train = std::make_unique<DataSource>(cfg.train_path, mcfg.vocab_size, B, T,
                                       static_cast<uint64_t>(cfg.seed));
  val = std::make_unique<DataSource>(cfg.val_path, mcfg.vocab_size, B, T, 0);
  if (val->batches().eval_batches() == 0)
    fail(val->path(), ": ", val->tokens(), " tokens, fewer than one evaluation batch of ",
         cfg.batch_size, "x", mcfg.seq_len, " + 1 (train.batch_size x model.seq_len + 1)");
  auto kind = [](const Batches& b) {
    return b.pairs() ? "preference pairs" : b.masked() ? "an example file" : "a token file";
  };
  if (std::string(kind(train->batches())) != kind(val->batches()))
    fail(val->path(), ": ", kind(val->batches()), " while ", train->path(), " is ",
         kind(train->batches()), " (data.train and data.val must be of one kind)");
  if (train->batches().pairs() != cfg.dpo())
    fail(train->path(), cfg.dpo() ? ": not preference pairs (finetune.objective = dpo needs "
                                    "fp8lm prepare of {\"prompt\", \"chosen\", \"rejected\"} lines)"
                                  : ": preference pairs: set finetune.objective = dpo");
}

Session::Session(const TrainConfig& c, const GptConfig& m, const dist::Grid& g,
                 const PretrainedWeights* from, bool resuming)
    : cfg(c),
      mcfg(m),
      level(c.precision_level()),
      grid(g),
      world(dist::size()),
      rank(dist::rank()),
      tp_comm(g, c.tp_options()),
      pp_comm(g, c.pp_wire_dtype()),
      model(m, level_plan(level).compute, static_cast<size_t>(c.batch_size),
            static_cast<size_t>(m.seq_len),
            fp8_options(c.recipe, c.amax_window, c.margin, c.mx_grad_format), true, &tp_comm,
            &pp_comm, c.lora()) {
  // 1F1B: stage s has at most pp − s micro-batches in flight.
  model.set_slots(static_cast<size_t>(std::min(g.pp - g.pp_rank, c.grad_accum)));
  model.set_lm_head(c.lm_head_operands());
  AdamWConfig acfg;
  acfg.beta1 = static_cast<float>(c.beta1);
  acfg.beta2 = static_cast<float>(c.beta2);
  acfg.weight_decay = static_cast<float>(c.weight_decay);
  acfg.states = c.state_formats();
  const Fp8Options fp8 = fp8_options(c.recipe, c.amax_window, c.margin, c.mx_grad_format);
  // The frozen weights: LoRA's base, which is also DPO's and GRPO's reference, or the
  // reference alone.
  if (lora() || c.objective != "lm") {
    FP8LM_CHECK(from != nullptr, "frozen weights need train.init_from");
    frozen =
        std::make_unique<FrozenWeights>(*from, model.specs(), model.shard(), model.mode(), fp8);
    base = std::filesystem::absolute(from->path()).lexically_normal().string();
    if (lora()) base_fingerprint = fingerprint_hex(base);
  }
  check_memory(mcfg, level, acfg.states.value_or(level_plan(level).states),
               model.trainable_specs());
  if (level_plan(level).sharded)
    replica = std::make_unique<ZeroReplica>(
        mcfg, grid.dp, grid.dp_rank, recipe_plan(c.recipe).weight_replica, model.shard(),
        grid.dp_group, grid.tp > 1 ? tp_amax_share() : AmaxShare{}, model.stage());
  opt = lora() ? make_lora_optimizer(model.trainable_specs(), level, acfg,
                                     static_cast<uint64_t>(c.seed))
               : make_gpt_optimizer(mcfg, level, acfg, static_cast<uint64_t>(c.seed),
                                    replica ? replica->owned() : std::vector<bool>{}, model.shard(),
                                    model.stage(), resuming ? nullptr : from);
  if (c.objective != "lm") ref = std::make_unique<ReferenceModel>(*frozen, model, fp8, &tp_comm);
  set_reductions();
  sync = std::make_unique<GradSync>(level, c.grad_scaling,
                                    replica ? replica->owner() : std::vector<int>{}, grid.dp_group);
  if (c.telemetry_every > 0) {
    probe.set_what_if(c.what_if);
    model.set_probe(&probe);
    opt->set_probe(&probe);
    sync->set_probe(&probe);
  }
}

void Session::set_reductions() {
  AdamW::Reductions r;
  const bool zero = replica && grid.dp > 1, tp = grid.tp > 1, pp = grid.pp > 1;
  if (zero || tp || pp) {
    std::vector<bool> split, tied_copy;
    for (const ParamSpec& s : model.specs()) {
      split.push_back(s.split != Split::kNone);
      tied_copy.push_back(pp && grid.pp_rank != 0 && s.name == "wte.weight");
    }
    const dist::Grid g = grid;
    r.squares = [g, split, tied_copy, zero, tp](double* v, size_t n) {
      for (size_t i = 0; i < n; ++i)
        if (tied_copy[i]) v[i] = 0.0;
      if (zero) dist::allreduce_scalars(v, n, dist::ScalarOp::kSum, g.dp_group);
      if (!tp) return;
      for (size_t i = 0; i < n; ++i)
        if (!split[i] && g.tp_rank != 0) v[i] = 0.0;
      dist::allreduce_scalars(v, n, dist::ScalarOp::kSum, g.tp_group);
    };
    if (pp)
      r.norm = [g](double* v, size_t n) {
        dist::allreduce_scalars(v, n, dist::ScalarOp::kSum, g.pp_group);
      };
    r.flags = [](double* v, size_t n) { dist::allreduce_scalars(v, n, dist::ScalarOp::kSum); };
  }
  if (tp) {
    const dist::Group tg = grid.tp_group;
    r.amax = [tg](float* v, size_t n) { dist::allreduce_max(v, n, tg); };
  }
  opt->set_reductions(std::move(r));
}

AmaxShare Session::tp_amax_share() {
  return [this](float a) {
    tp_comm.allreduce_max(&a, 1);
    return a;
  };
}

StateLayout Session::layout() const {
  StateLayout l;
  l.tp = model.shard();
  l.pp = model.stage();
  if (lora()) {  // one stage, every rank holds every adapter
    l.adapters = model.trainable_specs();
    l.stage_specs = {l.adapters};
    l.stage_owner = {{}};
    return l;
  }
  for (int st = 0; st < grid.pp; ++st) {
    l.stage_specs.push_back(param_layout(mcfg, l.tp, PpStage{st, grid.pp}));
    l.stage_owner.push_back(replica && grid.dp > 1 ? zero_owners(l.stage_specs.back(), grid.dp)
                                                   : std::vector<int>{});
  }
  return l;
}

void Session::bind_weights() {
  if (lora()) {
    model.set_weights(frozen->views());
    model.set_adapters(master_views(*opt));
    return;
  }
  model.set_weights(replica ? replica->views() : master_views(*opt));
  refresh_replicas();
}

TrainerState Session::state(int64_t done) {
  TrainerState s;
  s.step = done;
  s.seed = cfg.seed;
  s.level = std::string(level_name(level));
  s.batch_size = cfg.batch_size;
  s.grad_accum = cfg.grad_accum;
  s.train_path = cfg.train_path;
  s.model = mcfg;
  s.recipe = cfg.recipe;
  s.mx_grad_format = cfg.mx_grad_format;
  s.lm_head = std::string(dtype_name(model.lm_head()));  // resolved: f32 or bf16
  s.amax_window = cfg.amax_window;
  s.margin = cfg.margin;
  s.tokenizer = cfg.tokenizer;
  s.tokenizer_dir = std::filesystem::absolute(cfg.tokenizer_path()).lexically_normal().string();
  s.world_size = world;
  s.grad_scaling_mu = sync->mu();
  s.scaling = stage_scaling();
  if (lora()) {
    s.lora = cfg.lora();
    s.base = base;
    s.base_fingerprint = base_fingerprint;
  }
  return s;
}

nlohmann::json Session::stage_scaling() {
  nlohmann::json all = nlohmann::json::array();
  for (ScalingMeta* m : model.scaling_metas()) all.push_back(scaling_to_json(*m));
  if (grid.pp == 1 || (rank != 0 && (grid.tp_rank != 0 || grid.dp_rank != 0))) return all;
  if (rank != 0) {
    const std::string text = all.dump();
    const uint64_t n = text.size();
    dist::send_bytes(0, &n, sizeof n);
    dist::send_bytes(0, text.data(), text.size());
    return all;
  }
  for (int st = 1; st < grid.pp; ++st) {
    uint64_t n = 0;
    const int src = st * grid.tp;
    dist::recv_bytes(src, &n, sizeof n);
    std::string text(n, '\0');
    dist::recv_bytes(src, text.data(), n);
    for (const auto& m : nlohmann::json::parse(text)) all.push_back(m);
  }
  return all;
}

void Session::checkpoint(const std::string& out, int64_t done) {
  const StateLayout l = layout();
  if (rank != 0) {
    stage_scaling();
    if (l.sharded()) send_checkpoint_states(mcfg, *opt, l);
    return;
  }
  save_checkpoint(out, done, mcfg, *opt, trainer_json(state(done)), l);
}

void Session::alarm(const std::string& message, const std::string& out, bool tty) const {
  if (cfg.stop_on_alarm)
    fail("telemetry alarm at ", message,
         "; stopped (telemetry.stop_on_alarm = true); the last "
         "checkpoint in ",
         out, "/checkpoints is intact");
  std::printf("%swarning: %s\n", tty ? "\n" : "", message.c_str());
}

int64_t resume(Session& s, const std::string& resume_from, RunFolder* folder) {
  const std::string dir = resolve_checkpoint(resume_from);
  const TrainerState t = read_trainer_state(dir);
  const GptConfig& saved = t.model;
  const GptConfig& m = s.mcfg;
  if (saved.n_layer != m.n_layer || saved.n_head != m.n_head || saved.n_embd != m.n_embd ||
      saved.seq_len != m.seq_len || saved.vocab_size != m.vocab_size)
    fail(dir, ": checkpoint of a model ", saved.n_layer, "x", saved.n_embd, " (", saved.n_head,
         " heads, seq ", saved.seq_len, ", vocab ", saved.vocab_size, "), the config describes ",
         m.n_layer, "x", m.n_embd, " (", m.n_head, " heads, seq ", m.seq_len, ", vocab ",
         m.vocab_size, ")");
  const LoraSpec want = s.cfg.lora();
  if (t.lora.on() != want.on() ||
      (want.on() &&
       (t.lora.rank != want.rank || t.lora.alpha != want.alpha || t.lora.targets != want.targets)))
    fail(dir, ": checkpoint of ",
         t.lora.on() ? "LoRA rank " + std::to_string(t.lora.rank) + " on " +
                           lora_targets_text(t.lora.targets)
                     : std::string("full training"),
         ", the config asks for ",
         want.on()
             ? "LoRA rank " + std::to_string(want.rank) + " on " + lora_targets_text(want.targets)
             : std::string("full training"),
         " (finetune.lora_rank, lora_alpha, lora_targets must match)");
  if (t.lora.on() && lora_base(t, dir) != s.base)
    fail(dir, ": adapters trained on ", t.base, ", but train.init_from is ", s.base);
  load_optimizer(dir, *s.opt, s.model.trainable_specs(), s.model.shard());
  // A pipeline stage's layers' scaling states (8 per layer in fp8, in layer order).
  TrainerState mine = t;
  if (s.grid.pp > 1 && !t.scaling.empty()) {
    const auto [l0, l1] = stage_layers(m, s.model.stage());
    const size_t per = t.scaling.size() / static_cast<size_t>(m.n_layer);
    mine.scaling = nlohmann::json::array();
    for (size_t i = per * static_cast<size_t>(l0); i < per * static_cast<size_t>(l1); ++i)
      mine.scaling.push_back(t.scaling[i]);
  }
  restore_scaling(mine, s.model.scaling_metas(), dir);
  s.sync->set_mu(t.grad_scaling_mu);
  if (folder != nullptr) {
    folder->truncate_metrics(t.step);
    std::printf("resumed from %s at step %lld (saved at %d ranks, now %d: %s)\n", dir.c_str(),
                static_cast<long long>(t.step), t.world_size, s.world, s.grid.str().c_str());
  }
  return t.step;
}

}  // namespace fp8lm
