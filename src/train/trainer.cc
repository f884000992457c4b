#include "train/trainer.h"

#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "core/check.h"
#include "core/file.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "data/loader.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "distributed/collectives.h"
#include "distributed/grid.h"
#include "distributed/world.h"
#include "kernels/gemm.h"
#include "model/gpt.h"
#include "train/checkpoint.h"
#include "train/gpt_state.h"
#include "train/grad_sync.h"
#include "train/post_train.h"
#include "train/pp_comm.h"
#include "train/run_folder.h"
#include "train/session.h"
#include "train/telemetry.h"

namespace fp8lm {

namespace {

// A run whose updates were skipped this many steps in a row (non-finite gradients or
// updates) has diverged: it stops with an error instead of running on NaN losses.
constexpr int kMaxSkippedInRow = 20;

// Linear warm-up to lr, then cosine decay to min_lr at the last step.
double lr_at(const TrainConfig& c, int64_t step) {
  if (step < c.warmup_steps) return c.lr * static_cast<double>(step + 1) / c.warmup_steps;
  const double span = std::max(1, c.steps - c.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) / span);
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * progress));
}

// Tests of a rank failing mid-run: FP8LM_TEST_KILL_RANK=R:S kills rank R when it reaches
// the checkpoint of step S (before writing it), as a crash would; FP8LM_TEST_STOP_RANK=R:S
// stops it there (SIGSTOP), as a hung machine would.
void maybe_fail_for_test(int rank, int64_t step) {
  for (const auto& [var, sig] : {std::pair{"FP8LM_TEST_KILL_RANK", SIGKILL},
                                 std::pair{"FP8LM_TEST_STOP_RANK", SIGSTOP}}) {
    const char* v = std::getenv(var);
    int r = -1;
    long long s = -1;
    if (v != nullptr && std::sscanf(v, "%d:%lld", &r, &s) == 2 && r == rank && s == step)
      ::raise(sig);
  }
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

std::string fmt_duration(double s) {
  char buf[32];
  const int t = static_cast<int>(s + 0.5);
  std::snprintf(buf, sizeof buf, "%dm%02ds", t / 60, t % 60);
  return buf;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Phase 1: the process group and threads. Every rank must run the same resolved
// configuration; ranks on one machine split its cores unless train.threads says otherwise.
void start_ranks(const TrainConfig& cfg, const std::string& resume) {
  dist::set_timeout(cfg.comm_timeout);
  dist::require_same(fnv1a(cfg.to_toml() + "\nresume = " + resume), "the training configuration");
  if (cfg.threads > 0) {
    set_num_threads(cfg.threads);
  } else if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
             local != nullptr && dist::distributed()) {
    set_num_threads(std::max(1, omp_get_num_procs() / std::max(1, std::atoi(local))));
  }
}

// Phase 6: summary.json from the step rates and every rank's memory peaks.
// `dot`: this rank's BF16 products with measured ranges during the run (kernels/gemm.h).
void write_summary(Session& s, const std::string& out, const TrainResult& result,
                   const std::vector<double>& tok_rates, const dist::CommBytes& step_comm,
                   const kernels::Bf16DotCount& dot) {
  const int world = s.world;
  // Every rank's peak bytes per memory category, gathered to rank 0 (a sum of one-hot rows).
  std::vector<double> rank_peaks(static_cast<size_t>(world * kNumMemCategories), 0.0);
  for (int c = 0; c < kNumMemCategories; ++c)
    rank_peaks[static_cast<size_t>(s.rank * kNumMemCategories + c)] =
        static_cast<double>(mem_stats(static_cast<MemCategory>(c)).peak);
  if (world > 1)
    dist::allreduce_scalars(rank_peaks.data(), rank_peaks.size(), dist::ScalarOp::kSum);
  // Each pipeline stage's idle fraction, from its lead rank (tp 0, dp 0).
  const int pp = s.grid.pp;
  std::vector<double> idle(static_cast<size_t>(pp), 0.0);
  if (s.grid.tp_rank == 0 && s.grid.dp_rank == 0 && s.pipe_busy > 0)
    idle[static_cast<size_t>(s.grid.pp_rank)] = s.pipe_idle / s.pipe_busy;
  if (pp > 1) dist::allreduce_scalars(idle.data(), idle.size(), dist::ScalarOp::kSum);
  if (s.rank != 0) return;
  // Medians after warm-up, bytes per parameter from the memory accounting.
  const size_t skip = tok_rates.size() > 1 ? std::max<size_t>(1, tok_rates.size() / 10) : 0;
  std::vector<double> rates(tok_rates.begin() + static_cast<long>(skip), tok_rates.end());
  std::sort(rates.begin(), rates.end());
  size_t numel = 0, trainable = 0;
  for (const ParamSpec& p : s.model.specs()) numel += p.numel();
  for (const ParamSpec& p : s.model.trainable_specs()) trainable += p.numel();
  const double n = static_cast<double>(numel);
  auto per_param = [&](MemCategory c) { return static_cast<double>(mem_stats(c).current) / n; };
  const double master = per_param(MemCategory::kMaster),
               grads = per_param(MemCategory::kGradients), m1 = per_param(MemCategory::kOptimM1),
               m2 = per_param(MemCategory::kOptimM2), weights = per_param(MemCategory::kWeights);
  nlohmann::json per_rank = nlohmann::json::array();
  for (int r = 0; r < world; ++r) {
    nlohmann::json row = nlohmann::json::object();
    for (int c = 0; c < kNumMemCategories; ++c)
      row[std::string(mem_category_name(static_cast<MemCategory>(c)))] =
          rank_peaks[static_cast<size_t>(r * kNumMemCategories + c)] / (1 << 20);
    per_rank.push_back(row);
  }
  nlohmann::json peaks = nlohmann::json::object();
  for (int c = 0; c < kNumMemCategories; ++c)
    peaks[std::string(mem_category_name(static_cast<MemCategory>(c)))] =
        static_cast<double>(mem_stats(static_cast<MemCategory>(c)).peak) / (1 << 20);
  const double tps = rates.empty() ? 0.0 : rates[rates.size() / 2];
  const nlohmann::json summary = {
      {"level", std::string(level_name(s.level))},
      {"params", s.mcfg.num_params()},
      {"trainable_params", s.lora() ? trainable : s.mcfg.num_params()},
      {"steps", s.cfg.steps},
      {"final_train_loss", result.final_train_loss},
      {"objective", s.cfg.objective},
      {s.cfg.grpo() ? "final_val_reward" : "final_val_loss", result.final_val_loss},
      {"tokens_per_s", tps},
      {"peak_rss_mib", peak_rss_mib()},
      {"peak_mib_by_category", peaks},
      {"skipped_steps", s.opt->skipped_steps()},
      {"bytes_per_param",
       {{"master", master},
        {"grads", grads},
        {"m1", m1},
        {"m2", m2},
        {"weights", weights},
        {"model_states", master + grads + m1 + m2},
        {"total", master + grads + m1 + m2 + weights}}},
      {"world_size", world},
      {"comm_bytes_per_step", step_comm.bytes},
      {"comm_calls_per_step", step_comm.calls},
      {"per_rank_peak_mib", per_rank},
      {"telemetry", s.telemetry.json()},
      {"pipeline",
       {{"stages", pp},
        {"micro_batches", s.cfg.grad_accum},
        {"idle_fraction", idle},
        {"bubble_1f1b", static_cast<double>(pp - 1) / (s.cfg.grad_accum + pp - 1)}}},
      {"alarms", s.alarms.raised()},
      // The share of them on the AVX512-BF16 dot kernel (null: none ran).
      {"bf16_products_on_dot",
       dot.products == 0 ? nlohmann::json(nullptr)
                         : nlohmann::json(static_cast<double>(dot.on_dot) /
                                          static_cast<double>(dot.products))}};
  const std::string text = summary.dump(2) + "\n";
  write_text_atomic(out + "/summary.json", text);
  if (!s.telemetry.empty())
    std::printf("FP8 casts, worst tensors (%s/telemetry.jsonl):\n%s", out.c_str(),
                s.telemetry.text().c_str());
  if (pp > 1) {
    std::printf("pipeline idle per stage:");
    for (double f : idle) std::printf(" %.1f%%", 100 * f);
    std::printf(" (1F1B bubble (p-1)/(m+p-1) = %.1f%%)\n",
                100.0 * (pp - 1) / (s.cfg.grad_accum + pp - 1));
  }
  std::printf("done: train loss %.4f, %s %.4f, %.0f tokens/s; %s/summary.json\n",
              result.final_train_loss, s.cfg.grpo() ? "val reward" : "val loss",
              result.final_val_loss, tps, out.c_str());
}

std::string fmt_val(double v) {
  if (std::isnan(v)) return "-";  // no evaluation yet
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

// One step's micro-batches through this rank's pipeline stage, 1F1B (docs/parallelism.md):
// stage s of p runs min(p − s − 1, m) forwards, then alternates one forward and one backward,
// then the remaining backwards; one stage (no pipeline) runs each forward then its backward,
// as plain accumulation. Returns the sum of the micro-batches' losses (every stage).
// Micro-batch i of data-parallel rank r is batch (step · dp + r) · m + i.
double run_pipeline(Session& s, const Batches& loader, int64_t step, std::vector<int32_t>& in,
                    std::vector<int32_t>& tgt) {
  const int m = s.cfg.grad_accum, p = s.grid.pp, st = s.grid.pp_rank;
  const size_t slots = s.model.slots();
  auto load = [&](int i) {
    const int64_t index = (step * s.grid.dp + s.grid.dp_rank) * m + i;
    loader.train_batch(index, in.data(), tgt.data());
  };
  // Masked targets (fine-tuning): the step's loss is the mean over its N target tokens on
  // every data-parallel rank, so each target weighs m·dp/N (the optimizer divides by m, the
  // gradient average by dp).
  if (loader.masked()) {
    double n = 0;
    for (int i = 0; i < m; ++i) {
      load(i);
      n += static_cast<double>(std::count_if(tgt.begin(), tgt.end(), [](int32_t t) { return t >= 0; }));
    }
    if (s.grid.dp > 1) dist::allreduce_scalars(&n, 1, dist::ScalarOp::kSum, s.grid.dp_group);
    s.model.set_loss_weight(n > 0 ? static_cast<float>(m * s.grid.dp / n) : 0.0f);
  }
  double loss = 0;
  int f = 0, b = 0;
  auto forward = [&] {
    load(f);
    loss += s.model.stage_forward(in.data(), tgt.data(), static_cast<size_t>(f) % slots, true,
                                  f > 0);
    ++f;
  };
  auto backward = [&] {
    load(b);
    s.model.stage_backward(in.data(), static_cast<size_t>(b) % slots, b > 0);
    ++b;
  };
  s.pp_comm.take_waited();  // evaluation's waits are not the schedule's
  const auto t0 = std::chrono::steady_clock::now();
  for (const int warm = std::min(p - st - 1, m); f < warm;) forward();
  while (b < m) {
    if (f < m) forward();
    backward();
  }
  s.model.set_loss_weight(0);  // evaluation reports the mean over positions
  if (p == 1) return loss;
  s.pp_comm.wait();
  s.pipe_busy += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.pipe_idle += s.pp_comm.take_waited();
  s.model.sum_tied_grads();
  return s.pp_comm.share_loss(loss);
}

// DPO and GRPO (docs/post_training.md): the step's micro-batches, their gradient against the
// frozen reference, and the figures metrics.jsonl records (summed over the data-parallel
// ranks). Micro-batch i of data-parallel rank r is batch (step · dp + r) · m + i, as above.
// Each pair (DPO) or row (GRPO) weighs m·dp over the step's count of them: the optimizer
// divides by m, the gradient average by dp.
nlohmann::json sum_over_dp(Session& s, std::vector<double> v) {
  if (s.grid.dp > 1)
    dist::allreduce_scalars(v.data(), v.size(), dist::ScalarOp::kSum, s.grid.dp_group);
  return v;
}

double run_dpo(Session& s, const Batches& loader, int64_t step, std::vector<int32_t>& in,
               std::vector<int32_t>& tgt, nlohmann::json& metrics) {
  const int m = s.cfg.grad_accum;
  DpoStats all;
  for (int i = 0; i < m; ++i) {
    loader.train_batch((step * s.grid.dp + s.grid.dp_rank) * m + i, in.data(), tgt.data());
    all.add(dpo_micro_batch(s.model, *s.ref, in.data(), tgt.data(), s.cfg.beta,
                            2.0 / s.cfg.batch_size, i > 0));
  }
  const nlohmann::json v = sum_over_dp(
      s, {all.loss, all.margin, static_cast<double>(all.correct), static_cast<double>(all.pairs)});
  const double pairs = std::max(1.0, v[3].get<double>());
  metrics = {{"dpo_accuracy", v[2].get<double>() / pairs}, {"dpo_margin", v[1].get<double>() / pairs}};
  return v[0].get<double>() / pairs;  // the step's mean (every rank: the caller's average keeps it)
}

// The prompts of GRPO micro-batch j: prompts j·G … j·G + G − 1 of an order shuffled per epoch.
std::vector<size_t> grpo_lines(const Session& s, size_t n, int64_t j) {
  const size_t G = static_cast<size_t>(s.cfg.batch_size / s.cfg.samples);
  std::vector<size_t> lines;
  std::vector<uint32_t> order;
  uint64_t epoch = ~uint64_t{0};
  for (size_t g = 0; g < G; ++g) {
    const uint64_t u = static_cast<uint64_t>(j) * G + g;
    if (u / n != epoch) {
      epoch = u / n;
      epoch_permutation(n, static_cast<uint64_t>(s.cfg.seed), epoch, order);
    }
    lines.push_back(order[u % n]);
  }
  return lines;
}

double run_grpo(Session& s, const Inputs& inputs, int64_t step, nlohmann::json& metrics) {
  const int m = s.cfg.grad_accum;
  GrpoStats all;
  double reward = 0;
  for (int i = 0; i < m; ++i) {
    const int64_t j = (step * s.grid.dp + s.grid.dp_rank) * m + i;
    CompletionOptions o;
    o.max_new_tokens = s.cfg.max_new_tokens;
    o.temperature = s.cfg.temperature;
    o.seed = static_cast<uint64_t>(s.cfg.seed) * 0x100000001B3ull + static_cast<uint64_t>(j);
    const GrpoRows rows =
        grpo_rows(s.model, inputs.prompts, grpo_lines(s, inputs.prompts.lines.size(), j),
                  s.cfg.samples, o, *inputs.rewards, *inputs.tokenizer);
    for (const double r : rows.rewards) reward += r;
    all.add(grpo_micro_batch(s.model, *s.ref, rows, s.cfg.clip, s.cfg.kl,
                             1.0 / s.cfg.batch_size, i > 0));
  }
  const nlohmann::json v = sum_over_dp(
      s, {all.loss, all.kl, all.clipped, reward, static_cast<double>(m * s.cfg.batch_size)});
  const double rows = v[4].get<double>();
  metrics = {{"reward", v[3].get<double>() / rows},
             {"kl", v[1].get<double>() / rows},
             {"clipped", v[2].get<double>() / rows}};
  return v[0].get<double>() / rows;
}

// The validation figure of the objective (the val column): the mean next-token loss (lm),
// the mean DPO loss with its preference accuracy and margin, or GRPO's mean reward of greedy
// completions of the first eval_batches · batch_size validation prompts.
double validate(Session& s, const Inputs& inputs, nlohmann::json& metrics) {
  const TrainConfig& c = s.cfg;
  if (c.grpo()) {
    const double r = grpo_evaluate(s.model, inputs.val_prompts,
                                   static_cast<size_t>(c.eval_batches * c.batch_size),
                                   c.max_new_tokens, *inputs.val_rewards, *inputs.tokenizer);
    metrics = {{"val_reward", r}};
    return r;
  }
  if (c.dpo()) {
    const DpoStats d = dpo_evaluate(s.model, *s.ref, inputs.val->batches(), c.eval_batches, c.beta);
    const double n = static_cast<double>(std::max<size_t>(1, d.pairs));
    metrics = {{"val_loss", d.loss / n},
               {"val_dpo_accuracy", static_cast<double>(d.correct) / n},
               {"val_preference_accuracy", static_cast<double>(d.policy_correct) / n},
               {"val_dpo_margin", d.margin / n}};
    return d.loss / n;
  }
  const double v = evaluate(s.model, *inputs.val, c.eval_batches);
  metrics = {{"val_loss", v}};
  return v;
}

}  // namespace

TrainResult train(const TrainConfig& config, const std::string& resume_from, bool overwrite) {
  config.validate();
  // Resuming with precision.lm_head unset continues in the checkpoint's LM head format (runs
  // from before `level` was the default kept an FP32 head).
  TrainConfig cfg = config;
  if (!resume_from.empty() && cfg.lm_head == "level")
    cfg.lm_head = read_trainer_state(resolve_checkpoint(resume_from)).lm_head;
  mem_reset_peaks();  // peaks per category are this run's (a process may train several)
  const kernels::Bf16DotCount dot_start = kernels::bf16_dot_count();
  start_ranks(cfg, resume_from);
  const GptConfig mcfg = cfg.model();
  const int world = dist::size(), rank = dist::rank();
  const bool lead = rank == 0;
  const size_t B = static_cast<size_t>(cfg.batch_size), T = static_cast<size_t>(mcfg.seq_len);
  const std::string out = cfg.out_dir;
  // Rank 0 owns the run folder (locked) and the console; every rank trains.
  std::unique_ptr<RunFolder> folder;
  if (lead) folder = std::make_unique<RunFolder>(out, resume_from, overwrite);
  const Inputs inputs(cfg, mcfg, lead);
  const Batches* loader = inputs.train ? &inputs.train->batches() : nullptr;  // lm, dpo

  TrainResult result;
  result.steps = cfg.steps;
  {  // scoped so that the model and the optimizer are gone before the closing sample
    const dist::Grid grid = dist::make_grid(cfg.tp, cfg.pp);
    std::unique_ptr<PretrainedWeights> from;  // read while the optimizer is made
    if (!cfg.init_from.empty() &&
        (resume_from.empty() || cfg.objective != "lm" || cfg.lora_rank > 0))
      from = std::make_unique<PretrainedWeights>(cfg.init_from, cfg.seq_len);
    Session s(cfg, mcfg, grid, from.get(), !resume_from.empty());
    from.reset();
    const int64_t start = resume_from.empty() ? 0 : resume(s, resume_from, folder.get());
    if (start >= cfg.steps) {  // a finished run: its summary and checkpoints stay as they are
      if (lead)
        std::printf("the run is complete at step %lld of %d: nothing to train\n",
                    static_cast<long long>(start), cfg.steps);
      return result;
    }
    s.bind_weights();
    if (lead) {
      folder->begin();
      write_text_atomic(out + "/config.toml", cfg.to_toml());
      std::string what = cfg.init_from.empty() ? mcfg.preset : "from " + cfg.init_from;
      if (s.lora()) {
        size_t n = 0;
        for (const ParamSpec& p : s.model.trainable_specs()) n += p.numel();
        what += " with LoRA rank " + std::to_string(cfg.lora_rank) + " on " + cfg.lora_targets +
                " (" + std::to_string(n) + " trainable)";
      }
      std::printf("training %s (%zu parameters) at level %s on %s: %d steps of %dx%zu tokens%s\n",
                  what.c_str(), mcfg.num_params(), std::string(level_name(s.level)).c_str(),
                  cfg.train_path.c_str(), cfg.steps, cfg.batch_size * cfg.grad_accum * grid.dp, T,
                  world > 1 ? (" on " + std::to_string(world) + " ranks (" + grid.str() + ")").c_str()
                            : "");
    }
    const bool tty = lead && ::isatty(STDOUT_FILENO) != 0;
    const size_t tokens_per_step = B * T * static_cast<size_t>(cfg.grad_accum * grid.dp);
    dist::CommBytes step_comm;
    std::vector<int32_t> in(B * T), tgt(B * T);
    std::vector<double> tok_rates;
    double last_val = std::nan("");
    int skipped_in_row = 0;
    const auto t_begin = std::chrono::steady_clock::now();

    // DPO and GRPO measure the starting policy first (step 0): what the stage changes.
    if (cfg.objective != "lm" && start == 0 && cfg.eval_every > 0) {
      nlohmann::json before;
      last_val = validate(s, inputs, before);
      if (lead) {
        before["step"] = 0;
        folder->append_metrics(before);
        std::printf("before training: %s\n", before.dump().c_str());
      }
    }

    // Phase 5: the steps.
    for (int64_t step = start; step < cfg.steps; ++step) {
      const auto t0 = std::chrono::steady_clock::now();
      dist::reset_comm_bytes();
      // Data-parallel rank r takes micro-batches [r·accum, (r+1)·accum) of the step's
      // dp·accum: the same global batch as one process accumulating dp·accum micro-batches
      // (the ranks of a tensor-parallel group share theirs).
      s.probe.arm(s.samples(step));
      nlohmann::json objective = nlohmann::json::object();  // the objective's own figures
      double loss = cfg.dpo()    ? run_dpo(s, *loader, step, in, tgt, objective)
                    : cfg.grpo() ? run_grpo(s, inputs, step, objective)
                                 : run_pipeline(s, *loader, step, in, tgt) / cfg.grad_accum;
      if (step == start) s.pipe_busy = s.pipe_idle = 0;  // the first step warms up
      s.sync->average(s.model, s.telemetry_step(step));
      if (grid.dp > 1) {  // equal within a tensor-parallel group
        dist::allreduce_scalars(&loss, 1, dist::ScalarOp::kSum, grid.dp_group);
        loss /= grid.dp;
      }
      const double lr = lr_at(cfg, step);
      const StepResult r = s.opt->step(grad_views(s.model), static_cast<float>(lr),
                                       1.0f / cfg.grad_accum, static_cast<float>(cfg.grad_clip));
      s.probe.arm(false);  // armed for the model's casts and the optimizer's stores
      if (!r.skipped) s.refresh_replicas();  // O3: the owners' new weights to every rank
      skipped_in_row = r.skipped ? skipped_in_row + 1 : 0;
      if (skipped_in_row >= kMaxSkippedInRow)
        fail("training diverged: ", skipped_in_row, " steps in a row (to step ", step + 1,
             ") had non-finite gradients or updates and were skipped; the last checkpoint in ",
             out, "/checkpoints is intact (lower train.lr or raise precision.margin)");
      step_comm = dist::comm_bytes();  // gradients, scalars and O3's weight gathers
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double tps = static_cast<double>(tokens_per_step) / secs;
      tok_rates.push_back(tps);
      result.final_train_loss = loss;
      const bool last = step + 1 == cfg.steps;
      const bool save =
          (cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0) || last;
      if (save) maybe_fail_for_test(rank, step + 1);
      // Every rank evaluates the same batches (its shards need the group's collectives, the
      // FP8 scales every rank's); rank 0 records. The others would only wait for it.
      const bool eval = (cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0) || last;
      nlohmann::json val_metrics;
      if (eval) last_val = validate(s, inputs, val_metrics);
      if (!lead) {
        if (save && !last) s.checkpoint(out, step + 1);
        continue;
      }
      std::vector<std::string> alarms;
      if (s.samples(step)) {
        const std::vector<QuantRecord> records = s.probe.take();
        for (const QuantRecord& q : records) folder->append_telemetry(telemetry_json(step + 1, q));
        s.telemetry.add(step + 1, records);
        alarms = s.alarms.check_casts(step + 1, records);
      }
      nlohmann::json row = {{"step", step + 1},       {"loss", loss},
                            {"lr", lr},               {"grad_norm", r.grad_norm},
                            {"tokens_per_s", tps},    {"skipped", r.skipped}};
      row.update(objective);
      folder->append_metrics(row);
      if (r.skipped)
        std::printf("%sstep %lld: non-finite gradients or update, skipped (%lld so far)\n",
                    tty ? "\n" : "", static_cast<long long>(step + 1),
                    static_cast<long long>(s.opt->skipped_steps()));
      // The lead rank judges (a stop ends every rank: errors abort the MPI job).
      // GRPO's loss is about 0 by construction (advantages of mean 0): no spike to judge.
      if (!cfg.grpo())
        if (auto spike = s.alarms.check_loss(step + 1, loss)) alarms.push_back(*spike);
      for (const std::string& a : alarms) s.alarm(a, out, tty);
      if (eval) {
        val_metrics["step"] = step + 1;
        folder->append_metrics(val_metrics);
      }
      std::string extra;  // the objective's figure of the step
      if (objective.contains("dpo_accuracy"))
        extra = " acc " + fmt_val(objective["dpo_accuracy"].get<double>());
      if (objective.contains("reward")) extra = " reward " + fmt_val(objective["reward"].get<double>());
      const char* val_name = cfg.grpo() ? "val reward" : "val";
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t_begin).count();
      const double eta = elapsed / static_cast<double>(step + 1 - start) *
                         static_cast<double>(cfg.steps - step - 1);
      if (tty) {
        const int width = 30, done = static_cast<int>(width * (step + 1) / cfg.steps);
        std::printf("\r[%s%s] step %lld/%d | loss %.4f%s | %s %s | %.0f tok/s | ETA %s   ",
                    std::string(static_cast<size_t>(done), '#').c_str(),
                    std::string(static_cast<size_t>(width - done), '.').c_str(),
                    static_cast<long long>(step + 1), cfg.steps, loss, extra.c_str(), val_name,
                    fmt_val(last_val).c_str(),
                    tps, fmt_duration(eta).c_str());
        std::fflush(stdout);
      } else if ((step + 1) % std::max(1, cfg.steps / 20) == 0 || last || step == start) {
        std::printf("step %lld/%d loss %.4f%s %s %s lr %.2e grad_norm %.3f %.0f tok/s ETA %s\n",
                    static_cast<long long>(step + 1), cfg.steps, loss, extra.c_str(), val_name,
                    fmt_val(last_val).c_str(),
                    lr, r.grad_norm, tps, fmt_duration(eta).c_str());
        std::fflush(stdout);
      }
      if (save && !last) s.checkpoint(out, step + 1);
    }
    if (tty) std::printf("\n");
    result.final_val_loss = last_val;
    // The summary comes before the final checkpoint: a run killed between the two resumes
    // from an earlier checkpoint and writes both again, so a complete run always has both.
    const kernels::Bf16DotCount dot_end = kernels::bf16_dot_count();
    write_summary(s, out, result, tok_rates, step_comm,
                  {dot_end.products - dot_start.products, dot_end.on_dot - dot_start.on_dot});
    s.checkpoint(out, cfg.steps);
  }
  if (!lead) return result;
  // The sample reads the final checkpoint with an FP32 model, after the training state is freed.
  std::printf("sample: %s\n", sample_checkpoint(out, "The", 48, 0.8, 1).c_str());
  return result;
}

}  // namespace fp8lm
