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
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/check.h"
#include "core/file.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "data/loader.h"
#include "data/token_file.h"
#include "dist/world.h"
#include "model/gpt.h"
#include "train/checkpoint.h"
#include "train/gpt_state.h"
#include "train/grad_sync.h"
#include "train/zero_replica.h"

namespace fp8lm {
namespace fs = std::filesystem;

namespace {

// Linear warm-up to lr, then cosine decay to min_lr at the last step.
double lr_at(const TrainConfig& c, int64_t step) {
  if (step < c.warmup_steps) return c.lr * static_cast<double>(step + 1) / c.warmup_steps;
  const double span = std::max(1, c.steps - c.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) / span);
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * progress));
}

std::string fmt_gib(double g) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", g);
  return buf;
}

// Tests of a rank dying mid-run: FP8LM_TEST_KILL_RANK=R:S kills rank R when it reaches the
// checkpoint of step S (before writing it), as a crash would.
void maybe_kill_for_test(int rank, int64_t step) {
  const char* v = std::getenv("FP8LM_TEST_KILL_RANK");
  if (v == nullptr) return;
  int r = -1;
  long long s = -1;
  if (std::sscanf(v, "%d:%lld", &r, &s) == 2 && r == rank && s == step) ::raise(SIGKILL);
}

// Fails early, with the figures, when the run cannot fit: the model (allocated, most pages
// not yet touched) plus the optimizer states about to be allocated, against what this
// process has plus what the machine can still give.
void check_memory(const GptConfig& mcfg, PrecisionLevel level) {
  const StateFormats f = state_formats(level);
  size_t numel = 0, largest = 0;
  for (const ParamSpec& s : param_layout(mcfg)) {
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

void write_json_atomic(const std::string& path, const nlohmann::json& j) {
  const std::string text = j.dump(2) + "\n";
  write_file_atomic(path, [&](const WriteFn& w) { w(text.data(), text.size()); });
}

// Keeps the metrics lines of steps up to `step` (a resumed run redoes the later ones).
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).at("step").get<int64_t>() <= step) kept += line + "\n";
    } catch (const std::exception&) {
    }
  }
  write_file_atomic(path, [&](const WriteFn& w) { w(kept.data(), kept.size()); });
}

}  // namespace

TrainResult train(const TrainConfig& cfg, const std::string& resume) {
  cfg.validate();
  if (cfg.threads > 0) {
    set_num_threads(cfg.threads);
  } else if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
             local != nullptr && dist::distributed()) {
    // Ranks sharing a machine share its cores.
    set_num_threads(std::max(1, omp_get_num_procs() / std::max(1, std::atoi(local))));
  }
  const GptConfig mcfg = cfg.model();
  const PrecisionLevel level = cfg.precision_level();
  const size_t B = static_cast<size_t>(cfg.batch_size), T = static_cast<size_t>(mcfg.seq_len);
  const std::string out = cfg.out_dir;
  fs::create_directories(out);

  const TokenFile train_file(cfg.train_path, mcfg.vocab_size);
  const TokenFile val_file(cfg.val_path, mcfg.vocab_size);
  const DataLoader loader(train_file, B, T, static_cast<uint64_t>(cfg.seed));

  // Scoped so that the model and the optimizer are gone before the closing sample.
  const int world = dist::size(), rank = dist::rank();
  const bool lead = rank == 0;
  TrainResult result;
  result.steps = cfg.steps;
  {
    AdamWConfig acfg;
    acfg.beta1 = static_cast<float>(cfg.beta1);
    acfg.beta2 = static_cast<float>(cfg.beta2);
    acfg.weight_decay = static_cast<float>(cfg.weight_decay);
    Gpt model(mcfg, compute_mode(level), B, T, fp8_options(cfg.recipe, cfg.amax_window, cfg.margin));
    check_memory(mcfg, level);
    // O3: states sharded by whole tensors; every rank computes on replicated weights.
    std::unique_ptr<ZeroReplica> replica;
    if (level == PrecisionLevel::kO3) replica = std::make_unique<ZeroReplica>(mcfg, world, rank);
    std::unique_ptr<AdamW> opt =
        make_gpt_optimizer(mcfg, level, acfg, static_cast<uint64_t>(cfg.seed),
                           replica ? replica->owned() : std::vector<bool>{});
    if (replica && world > 1)
      opt->set_norm_reduction(
          [](double* v, size_t n) { dist::allreduce_scalars(v, n, dist::ScalarOp::kSum); });
    GradSync sync(level, cfg.grad_scaling, replica ? replica->owner() : std::vector<int>{});
    auto load_weights = [&] {  // the model reads the masters, or O3's replicas
      if (replica) {
        replica->refresh(*opt);
        model.set_weights(replica->refs());
      } else {
        model.set_weights(master_refs(*opt));
      }
    };
    int64_t start = 0;
    if (!resume.empty()) {
      const std::string dir = resolve_checkpoint(resume);
      const nlohmann::json t = read_trainer_json(dir);
      const GptConfig saved = model_config_of(t, dir);
      if (saved.n_layer != mcfg.n_layer || saved.n_head != mcfg.n_head ||
          saved.n_embd != mcfg.n_embd || saved.seq_len != mcfg.seq_len ||
          saved.vocab_size != mcfg.vocab_size)
        fail(dir, ": checkpoint of a model ", saved.n_layer, "x", saved.n_embd, " (", saved.n_head,
             " heads, seq ", saved.seq_len, ", vocab ", saved.vocab_size,
             "), the config describes ", mcfg.n_layer, "x", mcfg.n_embd, " (", mcfg.n_head,
             " heads, seq ", mcfg.seq_len, ", vocab ", mcfg.vocab_size, ")");
      load_optimizer(dir, *opt);
      const auto metas = model.scaling_metas();
      const auto& saved_metas = t.value("scaling", nlohmann::json::array());
      if (saved_metas.size() != metas.size())
        fail(dir, "/trainer.json: ", saved_metas.size(), " scaling states, the model has ",
             metas.size(), " (another precision level?)");
      for (size_t i = 0; i < metas.size(); ++i)
        scaling_from_json(saved_metas[i], *metas[i], dir + "/trainer.json");
      sync.set_mu(t.value("grad_scaling_mu", 1.0f));
      start = t.at("step").get<int64_t>();
      if (lead) {
        truncate_metrics(out + "/metrics.jsonl", start);
        std::printf("resumed from %s at step %lld (saved at %d ranks, now %d)\n", dir.c_str(),
                    static_cast<long long>(start), t.value("world_size", 1), world);
      }
    }
    load_weights();
    // Rank 0 writes the run folder and the console; every rank trains.
    std::ofstream metrics;
    if (lead) {
      write_file_atomic(out + "/config.toml", [&](const WriteFn& w) {
        const std::string t = cfg.to_toml();
        w(t.data(), t.size());
      });
      metrics.open(out + "/metrics.jsonl", std::ios::app);
      std::printf("training %s (%zu parameters) at level %s on %s: %d steps of %dx%zu tokens%s\n",
                  mcfg.preset.c_str(), mcfg.num_params(), std::string(level_name(level)).c_str(),
                  cfg.train_path.c_str(), cfg.steps, cfg.batch_size * cfg.grad_accum * world, T,
                  world > 1 ? (" on " + std::to_string(world) + " ranks").c_str() : "");
    }
    const bool tty = lead && ::isatty(STDOUT_FILENO) != 0;
    const size_t tokens_per_step = B * T * static_cast<size_t>(cfg.grad_accum * world);
    dist::CommBytes step_comm;
    std::vector<int32_t> in(B * T), tgt(B * T);
    std::vector<double> tok_rates;
    double last_val = std::nan("");
    const auto t_begin = std::chrono::steady_clock::now();
    auto checkpoint = [&](int64_t done) {
      nlohmann::json t = {
          {"step", done},
          {"seed", cfg.seed},
          {"level", std::string(level_name(level))},
          {"batch_size", cfg.batch_size},
          {"grad_accum", cfg.grad_accum},
          {"data", {{"train", cfg.train_path}, {"next_step", done}}},
          {"model",
           {{"preset", mcfg.preset},
            {"n_layer", mcfg.n_layer},
            {"n_head", mcfg.n_head},
            {"n_embd", mcfg.n_embd},
            {"seq_len", mcfg.seq_len},
            {"vocab_size", mcfg.vocab_size}}},
          {"fp8",
           {{"recipe", cfg.recipe}, {"amax_window", cfg.amax_window}, {"margin", cfg.margin}}},
          {"tokenizer", cfg.tokenizer},
          {"tokenizer_dir", cfg.tokenizer_dir},
          {"world_size", world},
          {"grad_scaling_mu", sync.mu()}};
      nlohmann::json metas = nlohmann::json::array();
      for (ScalingMeta* m : model.scaling_metas()) metas.push_back(scaling_to_json(*m));
      t["scaling"] = metas;
      save_checkpoint(out, done, mcfg, *opt, t,
                      replica && world > 1 ? replica->owner() : std::vector<int>{});
    };

    for (int64_t step = start; step < cfg.steps; ++step) {
      const auto t0 = std::chrono::steady_clock::now();
      dist::reset_comm_bytes();
      // Rank r takes micro-batches [r·accum, (r+1)·accum) of the step's world·accum: the
      // same global batch as one process accumulating world·accum micro-batches.
      double loss = 0;
      for (int micro = 0; micro < cfg.grad_accum; ++micro) {
        const int64_t index = (step * world + rank) * cfg.grad_accum + micro;
        loader.train_batch(static_cast<uint64_t>(index), in.data(), tgt.data());
        loss += model.forward_backward(in.data(), tgt.data(), micro > 0);
      }
      loss /= cfg.grad_accum;
      sync.average(model);
      if (world > 1) {
        dist::allreduce_scalars(&loss, 1, dist::ScalarOp::kSum);
        loss /= world;
      }
      const double lr = lr_at(cfg, step);
      const StepResult r = opt->step(grad_refs(model), static_cast<float>(lr),
                                     1.0f / cfg.grad_accum, static_cast<float>(cfg.grad_clip));
      if (!r.skipped) load_weights();  // the masters' scales changed
      step_comm = dist::comm_bytes();  // gradients, scalars and O3's weight gathers
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double tps = static_cast<double>(tokens_per_step) / secs;
      tok_rates.push_back(tps);
      result.final_train_loss = loss;
      const bool last = step + 1 == cfg.steps;
      const bool save =
          (cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0) || last;
      if (save) maybe_kill_for_test(rank, step + 1);
      if (!lead) {
        if (save && replica && world > 1) send_checkpoint_states(*opt, replica->owner());
        continue;
      }
      metrics << nlohmann::json{{"step", step + 1},
                                {"loss", loss},
                                {"lr", lr},
                                {"grad_norm", r.grad_norm},
                                {"tokens_per_s", tps},
                                {"skipped", r.skipped}}
                     .dump()
              << "\n";
      if (r.skipped)
        std::printf("%sstep %lld: non-finite gradients, update skipped (%lld so far)\n",
                    tty ? "\n" : "", static_cast<long long>(step + 1),
                    static_cast<long long>(opt->skipped_steps()));
      if ((cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0) || last) {
        last_val = evaluate(model, val_file, cfg.eval_batches);
        metrics << nlohmann::json{{"step", step + 1}, {"val_loss", last_val}}.dump() << "\n";
      }
      metrics.flush();
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t_begin).count();
      const double eta = elapsed / static_cast<double>(step + 1 - start) *
                         static_cast<double>(cfg.steps - step - 1);
      if (tty) {
        const int width = 30, done = static_cast<int>(width * (step + 1) / cfg.steps);
        std::printf("\r[%s%s] step %lld/%d | loss %.4f | val %.4f | %.0f tok/s | ETA %s   ",
                    std::string(static_cast<size_t>(done), '#').c_str(),
                    std::string(static_cast<size_t>(width - done), '.').c_str(),
                    static_cast<long long>(step + 1), cfg.steps, loss, last_val, tps,
                    fmt_duration(eta).c_str());
        std::fflush(stdout);
      } else if ((step + 1) % std::max(1, cfg.steps / 20) == 0 || last || step == start) {
        std::printf("step %lld/%d loss %.4f val %.4f lr %.2e grad_norm %.3f %.0f tok/s ETA %s\n",
                    static_cast<long long>(step + 1), cfg.steps, loss, last_val, lr, r.grad_norm,
                    tps, fmt_duration(eta).c_str());
        std::fflush(stdout);
      }
      if (save) checkpoint(step + 1);
    }
    if (tty) std::printf("\n");
    result.final_val_loss = last_val;
    // Every rank's peak bytes per memory category, gathered to rank 0 (a sum of one-hot rows).
    std::vector<double> rank_peaks(static_cast<size_t>(world * kNumMemCategories), 0.0);
    for (int c = 0; c < kNumMemCategories; ++c)
      rank_peaks[static_cast<size_t>(rank * kNumMemCategories + c)] =
          static_cast<double>(mem_stats(static_cast<MemCategory>(c)).peak);
    if (world > 1)
      dist::allreduce_scalars(rank_peaks.data(), rank_peaks.size(), dist::ScalarOp::kSum);
    if (lead) {
      // Summary: medians after warm-up, bytes per parameter from the memory accounting.
      const size_t skip = tok_rates.size() > 1 ? std::max<size_t>(1, tok_rates.size() / 10) : 0;
      std::vector<double> rates(tok_rates.begin() + static_cast<long>(skip), tok_rates.end());
      std::sort(rates.begin(), rates.end());
      size_t numel = 0;
      for (const ParamSpec& s : model.specs()) numel += s.numel();
      const double n = static_cast<double>(numel);
      auto per_param = [&](MemCategory c) { return static_cast<double>(mem_stats(c).current) / n; };
      const double master = per_param(MemCategory::kMaster),
                   grads = per_param(MemCategory::kGradients),
                   m1 = per_param(MemCategory::kOptimM1), m2 = per_param(MemCategory::kOptimM2),
                   weights = per_param(MemCategory::kWeights);
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
      const nlohmann::json summary = {
          {"level", std::string(level_name(level))},
          {"params", mcfg.num_params()},
          {"steps", cfg.steps},
          {"final_train_loss", result.final_train_loss},
          {"final_val_loss", result.final_val_loss},
          {"tokens_per_s", rates.empty() ? 0.0 : rates[rates.size() / 2]},
          {"peak_rss_mib", peak_rss_mib()},
          {"peak_mib_by_category", peaks},
          {"skipped_steps", opt->skipped_steps()},
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
          {"per_rank_peak_mib", per_rank}};
      write_json_atomic(out + "/summary.json", summary);
      std::printf("done: train loss %.4f, val loss %.4f, %.0f tokens/s; %s/summary.json\n",
                  result.final_train_loss, result.final_val_loss,
                  summary["tokens_per_s"].get<double>(), out.c_str());
    }
  }
  if (dist::rank() != 0) return result;
  // The sample reads the final checkpoint with an FP32 model, after the training state is freed.
  try {
    std::printf("sample: %s\n", sample_checkpoint(out, "The", 48, 0.8, 1).c_str());
  } catch (const Error& e) {
    std::printf("sample: skipped (%s)\n", e.what());
  }
  return result;
}

}  // namespace fp8lm
