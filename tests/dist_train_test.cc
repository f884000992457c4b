// Data-parallel training end to end: `mpirun -np 2 fp8lm train` against one process doing
// the same global batch by accumulation, resuming at another world size, and a rank that
// dies mid-run. Runs the fp8lm binary under the system's mpiexec.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/token_file.h"
#include "model/config.h"
#include "model/params.h"
#include "tensor/scaled_view.h"

namespace fp8lm {
namespace {

namespace fs = std::filesystem;

// Open MPI refuses root without these; one OpenMP thread per rank (2 ranks on 2 cores).
// Under ASan, Open MPI's never-freed start-up allocations are not ours to report.
constexpr const char* kMpiEnv =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
#ifdef FP8LM_SANITIZE
    "ASAN_OPTIONS=detect_leaks=0 "
#endif
    ;

class DistTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    // The pid keeps two test runs on one machine out of each other's folders.
    dir_ = fs::path(::testing::TempDir()) /
           ("fp8lm_dist_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // Byte-level text, so the tiny preset's 512-entry vocabulary holds every token.
    std::string text;
    for (int i = 0; text.size() < 60000; ++i)
      text += "the cat sat on the mat " + std::to_string(i % 23) + ". a dog ran far. ";
    std::vector<uint16_t> t(text.begin(), text.end());
    const size_t val = t.size() / 10;
    write_token_file(path("train.bin"), t.size() - val,
                     [&](const auto& s) { s(t.data(), t.size() - val); });
    write_token_file(path("val.bin"), val,
                     [&](const auto& s) { s(t.data() + t.size() - val, val); });
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // fp8lm train with the tiny preset; ranks = 0 runs without mpirun.
  int train(int ranks, const std::string& out, const std::string& extra,
            const std::string& env = "") {
    std::string cmd = env;
    if (ranks > 0)
      cmd += std::string(kMpiEnv) + FP8LM_MPIEXEC + " -n " + std::to_string(ranks) +
            " --oversubscribe --bind-to none --mca btl self,vader ";
    cmd += std::string(FP8LM_BINARY) + " train --set model.preset=tiny --set model.seq_len=32" +
           " --set data.tokenizer=byte --set data.train=" + path("train.bin") +
           " --set data.val=" + path("val.bin") + " --set train.batch_size=4" +
           " --set train.warmup_steps=2 --set train.eval_every=0 --set train.out_dir=" + path(out) +
           " " + extra + " >" + path(out + ".log") + " 2>&1";
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  }
  std::string log(const std::string& out) const {
    std::ifstream f(path(out + ".log"));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // Every value of `key` in the run's metrics.jsonl, in order.
  std::vector<double> metric(const std::string& out, const char* key) const {
    std::vector<double> v;
    std::ifstream f(path(out + "/metrics.jsonl"));
    std::string line;
    while (std::getline(f, line)) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains(key)) v.push_back(j[key].get<double>());
    }
    return v;
  }
  std::vector<double> losses(const std::string& out) const { return metric(out, "loss"); }
  std::vector<double> val_losses(const std::string& out) const { return metric(out, "val_loss"); }
  // Every step's loss of `b` within rel · |a| of `a`'s (same count).
  void expect_close(const std::vector<double>& a, const std::vector<double>& b, double rel,
                    size_t count) const {
    ASSERT_EQ(a.size(), count);
    ASSERT_EQ(b.size(), count);
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_NEAR(b[i], a[i], rel * std::fabs(a[i])) << "step " << i + 1;
  }
  nlohmann::json summary(const std::string& out) const {
    std::ifstream f(path(out + "/summary.json"));
    return nlohmann::json::parse(f);
  }

  fs::path dir_;
};

// Two ranks of 4 sequences = one process accumulating 2 micro-batches of 4.
TEST_F(DistTrain, Fp32TwoRanksEqualOneProcessAccumulating) {
  ASSERT_EQ(
      train(0, "one", "--set precision.level=fp32 --set train.steps=20 --set train.grad_accum=2"),
      0)
      << log("one");
  ASSERT_EQ(train(2, "two", "--set precision.level=fp32 --set train.steps=20"), 0) << log("two");
  const auto a = losses("one"), b = losses("two");
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(b[i], a[i], 1e-6 * std::fabs(a[i])) << "step " << i + 1;
  const auto s = summary("two");
  EXPECT_EQ(s["world_size"], 2);
  // FP32 gradients on the wire: 4 bytes per parameter (tiny's 512-row wte needs no padding).
  EXPECT_EQ(s["comm_bytes_per_step"]["allreduce_f32"].get<double>(),
            4.0 * s["params"].get<double>());
  ASSERT_EQ(s["per_rank_peak_mib"].size(), 2u);
}

// O2: FP8 gradients through the FP8 all-reduce; the loss follows the one-process run, and
// the gradient bytes are a quarter of FP32's.
TEST_F(DistTrain, O2TwoRanksFollowOneProcessWithQuarterTheBytes) {
  ASSERT_EQ(
      train(0, "one", "--set precision.level=O2 --set train.steps=20 --set train.grad_accum=2"), 0)
      << log("one");
  ASSERT_EQ(train(2, "two", "--set precision.level=O2 --set train.steps=20"), 0) << log("two");
  ASSERT_EQ(train(2, "two32", "--set precision.level=fp32 --set train.steps=2"), 0) << log("two32");
  const auto a = losses("one"), b = losses("two");
  ASSERT_EQ(b.size(), 20u);
  EXPECT_LT(std::fabs(b.back() - a.back()) / a.back(), 0.01);
  EXPECT_LT(b.back(), b.front() - 0.5);  // it learns
  const double fp8 = summary("two")["comm_bytes_per_step"]["allreduce_fp8"].get<double>();
  const double f32 = summary("two32")["comm_bytes_per_step"]["allreduce_f32"].get<double>();
  EXPECT_LE(fp8 / f32, 0.27);
}

// Telemetry of the gradient on the wire: on sampled steps every tensor's FP8 average is
// compared with the exact mean (role "wire"); measuring changes nothing in training, and its
// FP32 all-reduce is counted as its own traffic. At O3 rank 0 records the tensors it owns.
TEST_F(DistTrain, WireTelemetryMeasuresTheFp8Average) {
  for (const std::string level : {"O2", "O3"}) {
    const std::string common = "--set precision.level=" + level + " --set train.steps=6";
    ASSERT_EQ(train(2, "plain" + level, common + " --set telemetry.every=0"), 0) << log("plain" + level);
    ASSERT_EQ(train(2, "wire" + level, common + " --set telemetry.every=2"), 0) << log("wire" + level);
    EXPECT_EQ(losses("wire" + level), losses("plain" + level)) << level;
    std::ifstream f(path("wire" + level + "/telemetry.jsonl"));
    std::map<int, int> per_step;
    for (std::string line; std::getline(f, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j["role"] != "wire") continue;
      ++per_step[j["step"].get<int>()];
      ASSERT_TRUE(j["snr_db"].is_number()) << line;
      EXPECT_GT(j["snr_db"].get<double>(), 10.0) << line;
      EXPECT_EQ(j["dtype"], "e4m3");
    }
    const auto s = summary("wire" + level);
    ASSERT_EQ(per_step.size(), 3u) << level;  // steps 2, 4, 6
    const int tensors = 2 + 12 * 2 + 2;      // tiny: wte, wpe, 2 blocks of 12, ln_f
    for (const auto& [step, n] : per_step) {
      if (level == "O2") EXPECT_EQ(n, tensors) << "step " << step;
      else EXPECT_TRUE(n > 0 && n < tensors) << "step " << step << ": " << n;  // rank 0's share
    }
    // The last step measured: the exact means travelled as FP32, 4 bytes per parameter.
    EXPECT_EQ(s["comm_bytes_per_step"]["telemetry_f32"].get<double>(), 4.0 * s["params"].get<double>());
  }
}

// Checkpoints are the single-process format: a 2-rank run resumes in one process and the
// other way round, at every level.
TEST_F(DistTrain, ResumesAtAnotherWorldSize) {
  for (const std::string level : {"fp32", "bf16", "O1", "O2", "O3"}) {
    const std::string base = "--set precision.level=" + level + " --set train.steps=8" +
                             " --set train.checkpoint_every=4";
    ASSERT_EQ(train(2, "two_" + level, base), 0) << log("two_" + level);
    ASSERT_EQ(train(0, "one_" + level,
                    base + " --resume " + path("two_" + level + "/checkpoints/step-4")),
              0)
        << log("one_" + level);
    EXPECT_NE(log("one_" + level).find("saved at 2 ranks, now 1"), std::string::npos);
    EXPECT_EQ(losses("one_" + level).size(), 4u);
    ASSERT_EQ(train(2, "back_" + level, base + " --resume " + path("one_" + level)), 0)
        << log("back_" + level);
    EXPECT_NE(log("back_" + level).find("saved at 1 ranks, now 2"), std::string::npos);
    for (double l : losses("one_" + level)) EXPECT_TRUE(std::isfinite(l));
  }
}

// O3 computes exactly what O2 computes (the replicas hold the casts the O2 GEMMs make), with
// half the master and optimizer bytes per rank at 2 ranks, balanced; its checkpoints resume
// in one process.
TEST_F(DistTrain, O3EqualsO2WithShardedStates) {
  const std::string base = "--set train.steps=12 --set train.checkpoint_every=6";
  ASSERT_EQ(train(2, "o2", base + " --set precision.level=O2"), 0) << log("o2");
  ASSERT_EQ(train(2, "o3", base + " --set precision.level=O3"), 0) << log("o3");
  EXPECT_EQ(losses("o3"), losses("o2"));
  auto states = [&](const std::string& run, int r) {
    const nlohmann::json s = summary(run);
    const auto& p = s["per_rank_peak_mib"][static_cast<size_t>(r)];
    return p["master"].get<double>() + p["optim_m1"].get<double>() + p["optim_m2"].get<double>();
  };
  const double o2 = states("o2", 0), a = states("o3", 0), b = states("o3", 1);
  EXPECT_LE(std::max(a, b) / o2, 0.55);
  EXPECT_LE(std::fabs(a - b) / std::max(a, b), 0.10);
  EXPECT_GT(summary("o3")["comm_bytes_per_step"]["allgather"].get<double>(), 0.0);
  ASSERT_EQ(train(0, "o3_one", base + " --set precision.level=O3 --resume " +
                                   path("o3/checkpoints/step-6")),
            0)
      << log("o3_one");
  ASSERT_EQ(train(0, "o2_one", base + " --set precision.level=O2 --resume " +
                                   path("o2/checkpoints/step-6")),
            0)
      << log("o2_one");
  EXPECT_EQ(losses("o3_one"), losses("o2_one"));
}

// Under the fine-grained recipes O3 also computes exactly what O2 computes, and resumes
// exactly. block: owners quantize the Linear weights into 128×128 E4M3 blocks and gather them
// with their scale grids, which the GEMMs use as they are; mxfp8: the Linear weights travel as
// FP16 masters and every rank quantizes them per GEMM. The gather carries exactly those bytes.
TEST_F(DistTrain, O3EqualsO2UnderBlockAndMxRecipes) {
  GptConfig cfg = gpt_preset("tiny");
  cfg.seq_len = 32;
  double gather_block = 0, gather_f16 = 0;  // per step: payloads and scales
  for (const ParamSpec& p : param_layout(cfg)) {
    const double n = static_cast<double>(p.numel());
    gather_f16 += 2 * n + 4;
    gather_block += p.linear_weight
                        ? n + 4.0 * static_cast<double>(
                                        scale_grid_shape(p.shape, ScalingMode::kBlock128).numel())
                        : 2 * n + 4;
  }
  for (const std::string recipe : {"block", "mxfp8"}) {
    const std::string base = "--set train.steps=8 --set train.checkpoint_every=4 --set precision.recipe=" + recipe;
    ASSERT_EQ(train(2, "o2" + recipe, base + " --set precision.level=O2"), 0) << log("o2" + recipe);
    ASSERT_EQ(train(2, "o3" + recipe, base + " --set precision.level=O3"), 0) << log("o3" + recipe);
    const std::vector<double> o2 = losses("o2" + recipe), o3 = losses("o3" + recipe);
    ASSERT_EQ(o2.size(), 8u) << recipe;
    EXPECT_EQ(o3, o2) << recipe;
    EXPECT_EQ(summary("o3" + recipe)["comm_bytes_per_step"]["allgather"].get<double>(),
              recipe == "block" ? gather_block : gather_f16)
        << recipe;
    ASSERT_EQ(train(2, "o3r" + recipe, base + " --set precision.level=O3 --resume " +
                                           path("o3" + recipe + "/checkpoints/step-4")),
              0)
        << log("o3r" + recipe);
    EXPECT_EQ(losses("o3r" + recipe), std::vector<double>(o3.begin() + 4, o3.end())) << recipe;
  }
}

// A rank killed mid-run ends the whole job with a non-zero exit, promptly; the last complete
// checkpoint stays loadable.
TEST_F(DistTrain, KilledRankEndsTheJob) {
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = train(
      2, "killed", "--set precision.level=O2 --set train.steps=50 --set train.checkpoint_every=2",
      "FP8LM_TEST_KILL_RANK=1:4 ");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(rc, 0) << log("killed");
  EXPECT_LT(secs, 60.0);
  EXPECT_NE(log("killed").find("rank 1"), std::string::npos) << log("killed");
  EXPECT_FALSE(fs::exists(path("killed/checkpoints/step-6"))) << "rank 0 went on alone";
  const std::string eval = std::string(FP8LM_BINARY) + " eval --checkpoint " + path("killed") +
                           " --data " + path("val.bin") + " --batches 1 >" + path("eval.txt");
  EXPECT_EQ(std::system(eval.c_str()), 0);
}

// A stopped rank (SIGSTOP: a hung machine) ends the job once a collective has waited
// train.comm_timeout seconds, instead of hanging it forever.
TEST_F(DistTrain, StoppedRankEndsTheJobAfterTheTimeout) {
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = train(2, "stopped",
                       "--set precision.level=O2 --set train.steps=50 --set train.checkpoint_every=2"
                       " --set train.comm_timeout=3",
                       "FP8LM_TEST_STOP_RANK=1:4 ");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(rc, 0) << log("stopped");
  EXPECT_LT(secs, 60.0);
  EXPECT_NE(log("stopped").find("has waited"), std::string::npos) << log("stopped");
}

// Ranks started with different configurations (here precision levels) are refused by every
// rank before any buffer is exchanged: no heap corruption, no hang.
TEST_F(DistTrain, RanksWithDifferentConfigurationsAreRefused) {
  for (const char* other : {"fp32", "O3"}) {
    SCOPED_TRACE(other);
    const std::string common = std::string(" train --set model.preset=tiny --set model.seq_len=32") +
                               " --set data.tokenizer=byte --set data.train=" + path("train.bin") +
                               " --set data.val=" + path("val.bin") +
                               " --set train.steps=4 --set train.out_dir=" + path("mixed") +
                               " --set train.comm_timeout=20";
    const std::string cmd = std::string(kMpiEnv) + FP8LM_MPIEXEC +
                            " --oversubscribe --bind-to none --mca btl self,vader -n 1 " +
                            FP8LM_BINARY + common + " --set precision.level=O2 : -n 1 " +
                            FP8LM_BINARY + common + " --set precision.level=" + other + " >" +
                            path("mixed.log") + " 2>&1";
    const auto t0 = std::chrono::steady_clock::now();
    const int status = std::system(cmd.c_str());
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << log("mixed");
    EXPECT_LT(secs, 60.0);
    EXPECT_NE(log("mixed").find("disagree on the training configuration"), std::string::npos)
        << log("mixed");
    EXPECT_FALSE(fs::exists(path("mixed/metrics.jsonl")));
  }
}

// Tensor parallelism (docs/parallelism.md): two ranks holding halves of every split tensor
// train the one-process model; its checkpoints are the one-process format, resumed on one
// process, on two data-parallel ranks, and back on two tensor-parallel ranks.
TEST_F(DistTrain, TensorParallelFp32EqualsOneProcessAndResumesAtAnyLayout) {
  // Two micro-batches per step, so that two data-parallel ranks of one each take the same.
  const std::string base = "--set precision.level=fp32 --set train.steps=20"
                           " --set train.grad_accum=2 --set train.checkpoint_every=10"
                           " --set train.eval_every=10";
  ASSERT_EQ(train(0, "one", base), 0) << log("one");
  ASSERT_EQ(train(2, "tp2", base + " --set parallel.tp=2"), 0) << log("tp2");
  expect_close(losses("one"), losses("tp2"), 1e-5, 20);
  expect_close(val_losses("one"), val_losses("tp2"), 1e-5, 2);
  const auto s = summary("tp2");
  // Activations summed in the group, no gradient all-reduce (one data-parallel rank).
  EXPECT_GT(s["comm_bytes_per_step"]["tp.allreduce_f32"].get<double>(), 0.0);
  EXPECT_FALSE(s["comm_bytes_per_step"].contains("allreduce_f32"));
  // Each rank keeps half of the split tensors' states.
  const double one_master = summary("one")["per_rank_peak_mib"][0]["master"].get<double>();
  EXPECT_LT(s["per_rank_peak_mib"][1]["master"].get<double>(), 0.6 * one_master);

  const std::string ckpt = " --resume " + path("tp2/checkpoints/step-10");
  ASSERT_EQ(train(0, "tp2_one", base + ckpt), 0) << log("tp2_one");
  ASSERT_EQ(train(2, "tp2_dp2", base + " --set train.grad_accum=1" + ckpt), 0) << log("tp2_dp2");
  ASSERT_EQ(train(2, "one_tp2", base + " --set parallel.tp=2 --resume " +
                                    path("one/checkpoints/step-10")), 0)
      << log("one_tp2");
  const auto tail = [&](const std::string& out) {
    const auto l = losses(out);
    return std::vector<double>(l.end() - 10, l.end());
  };
  expect_close(tail("tp2"), losses("tp2_one"), 1e-6, 10);
  expect_close(tail("tp2"), losses("tp2_dp2"), 1e-6, 10);
  expect_close(tail("one"), losses("one_tp2"), 1e-6, 10);
}

// 2 tensor-parallel × 2 data-parallel ranks = one process accumulating 2 micro-batches.
TEST_F(DistTrain, TensorTimesDataParallelEqualsOneProcessAccumulating) {
  const std::string base = "--set precision.level=fp32 --set train.steps=20";
  ASSERT_EQ(train(0, "one", base + " --set train.grad_accum=2"), 0) << log("one");
  ASSERT_EQ(train(4, "tp2dp2", base + " --set parallel.tp=2"), 0) << log("tp2dp2");
  expect_close(losses("one"), losses("tp2dp2"), 1e-5, 20);
  EXPECT_NE(log("tp2dp2").find("tp 2 x pp 1 x dp 2"), std::string::npos) << log("tp2dp2");
  const auto s = summary("tp2dp2");
  EXPECT_GT(s["comm_bytes_per_step"]["allreduce_f32"].get<double>(), 0.0);  // gradients, dp
  EXPECT_GT(s["comm_bytes_per_step"]["tp.allreduce_f32"].get<double>(), 0.0);
}

// In FP8 the shards share their scales (docs/parallelism.md): O1 and O2 at tp 2 end within
// 1% of one process.
TEST_F(DistTrain, TensorParallelFp8FollowsOneProcess) {
  for (const std::string level : {"O1", "O2"}) {
    const std::string base = "--set precision.level=" + level +
                             " --set train.steps=40 --set train.eval_every=40";
    ASSERT_EQ(train(0, "one_" + level, base), 0) << log("one_" + level);
    ASSERT_EQ(train(2, "tp2_" + level, base + " --set parallel.tp=2"), 0) << log("tp2_" + level);
    const auto a = val_losses("one_" + level), b = val_losses("tp2_" + level);
    ASSERT_EQ(a.size(), 1u);
    ASSERT_EQ(b.size(), 1u);
    EXPECT_NEAR(b[0], a[0], 0.01 * a[0]) << level;
  }
}

// FP8 ZeRO within the data-parallel group of a tensor-parallel run: O3 at tp 2 × dp 2 computes
// exactly what O2 computes there, with half the master and moment bytes per rank; every
// layout resumes bit for bit (the FP8 scales and μ are the same on every rank, so rank 0's
// checkpoint holds them all).
TEST_F(DistTrain, O3WithTensorParallelEqualsO2AndResumesExactly) {
  for (const std::string recipe : {"delayed", "block"}) {
    SCOPED_TRACE(recipe);
    const std::string base = "--set train.steps=12 --set train.checkpoint_every=6"
                             " --set train.eval_every=6 --set parallel.tp=2"
                             " --set precision.recipe=" + recipe;
    const std::string o2 = "o2_" + recipe, o3 = "o3_" + recipe;
    ASSERT_EQ(train(4, o2, base + " --set precision.level=O2"), 0) << log(o2);
    ASSERT_EQ(train(4, o3, base + " --set precision.level=O3"), 0) << log(o3);
    EXPECT_EQ(losses(o2), losses(o3));
    EXPECT_EQ(val_losses(o2), val_losses(o3));
    const double m2 = summary(o2)["per_rank_peak_mib"][0]["master"].get<double>();
    const double m3 = summary(o3)["per_rank_peak_mib"][0]["master"].get<double>();
    EXPECT_LT(m3, 0.6 * m2);
    for (const std::string level : {"O2", "O3"}) {
      const std::string run = level == "O2" ? o2 : o3;
      ASSERT_EQ(train(4, run + "_r", base + " --set precision.level=" + level + " --resume " +
                                        path(run + "/checkpoints/step-6")),
                0)
          << log(run + "_r");
      const auto full = losses(run);
      EXPECT_EQ(losses(run + "_r"), std::vector<double>(full.end() - 6, full.end())) << level;
    }
  }
}

// Pipeline parallelism (docs/parallelism.md): two stages of one layer each, alone and with
// two tensor-parallel ranks per stage, train the one-process model over 4 micro-batches
// (1F1B); checkpoints are the one-process format, resumed on one process, on two
// data-parallel ranks, and from one process onto tp 2 × pp 2.
TEST_F(DistTrain, PipelineFp32EqualsOneProcessAndResumesAtAnyLayout) {
  const std::string base = "--set precision.level=fp32 --set train.steps=20"
                           " --set train.grad_accum=4 --set train.checkpoint_every=10"
                           " --set train.eval_every=10";
  ASSERT_EQ(train(0, "one", base), 0) << log("one");
  ASSERT_EQ(train(2, "pp2", base + " --set parallel.pp=2"), 0) << log("pp2");
  ASSERT_EQ(train(4, "tp2pp2", base + " --set parallel.pp=2 --set parallel.tp=2"), 0)
      << log("tp2pp2");
  for (const std::string run : {"pp2", "tp2pp2"}) {
    SCOPED_TRACE(run);
    expect_close(losses("one"), losses(run), 1e-5, 20);
    expect_close(val_losses("one"), val_losses(run), 1e-5, 2);
    const auto s = summary(run);
    // Activations forward and gradients backward, f32 at fp32, 4 micro-batches a step.
    EXPECT_GT(s["comm_bytes_per_step"]["pp.send_f32"].get<double>(), 0.0);
    EXPECT_EQ(s["comm_bytes_per_step"]["pp.send_f32"], s["comm_bytes_per_step"]["pp.recv"]);
    EXPECT_EQ(s["pipeline"]["stages"], 2);
    EXPECT_NEAR(s["pipeline"]["bubble_1f1b"].get<double>(), 0.2, 1e-12);  // (2-1)/(4+2-1)
    for (const auto& f : s["pipeline"]["idle_fraction"]) {
      EXPECT_GE(f.get<double>(), 0.0);
      EXPECT_LT(f.get<double>(), 1.0);
    }
  }
  // Each stage keeps its layers' states (the tied wte on both ends).
  const double one_master = summary("one")["per_rank_peak_mib"][0]["master"].get<double>();
  EXPECT_LT(summary("tp2pp2")["per_rank_peak_mib"][3]["master"].get<double>(), 0.6 * one_master);

  const auto tail = [&](const std::string& out) {
    const auto l = losses(out);
    return std::vector<double>(l.end() - 10, l.end());
  };
  const std::string pp_ckpt = " --resume " + path("pp2/checkpoints/step-10");
  ASSERT_EQ(train(0, "pp2_one", base + pp_ckpt), 0) << log("pp2_one");
  ASSERT_EQ(train(2, "pp2_dp2", base + " --set train.grad_accum=2" + pp_ckpt), 0)
      << log("pp2_dp2");
  ASSERT_EQ(train(0, "tp2pp2_one", base + " --resume " + path("tp2pp2/checkpoints/step-10")), 0)
      << log("tp2pp2_one");
  ASSERT_EQ(train(2, "tp2pp2_dp2", base + " --set train.grad_accum=2 --resume " +
                                       path("tp2pp2/checkpoints/step-10")),
            0)
      << log("tp2pp2_dp2");
  ASSERT_EQ(train(4, "one_tp2pp2", base + " --set parallel.pp=2 --set parallel.tp=2 --resume " +
                                       path("one/checkpoints/step-10")),
            0)
      << log("one_tp2pp2");
  expect_close(tail("pp2"), losses("pp2_one"), 1e-6, 10);
  expect_close(tail("pp2"), losses("pp2_dp2"), 1e-6, 10);
  expect_close(tail("tp2pp2"), losses("tp2pp2_one"), 1e-6, 10);
  expect_close(tail("tp2pp2"), losses("tp2pp2_dp2"), 1e-6, 10);
  expect_close(tail("one"), losses("one_tp2pp2"), 1e-6, 10);
}

// In FP8 the stages keep their layers' scales; activations cross the stage boundary as BF16
// or as E4M3 with a per-message scale (half the bytes): both end within 1% of one process.
// O3 at pp 2 × dp 2 computes exactly O2 there and resumes bit for bit.
TEST_F(DistTrain, PipelineFp8FollowsOneProcessAndO3EqualsO2) {
  const std::string base = "--set precision.level=O2 --set train.steps=30 --set train.eval_every=30"
                           " --set train.grad_accum=4";
  ASSERT_EQ(train(0, "one", base), 0) << log("one");
  for (const std::string wire : {"bf16", "e4m3"}) {
    const std::string run = "pp2_" + wire;
    ASSERT_EQ(train(2, run, base + " --set parallel.pp=2 --set parallel.pp_wire=" + wire), 0)
        << log(run);
    const auto a = val_losses("one"), b = val_losses(run);
    ASSERT_EQ(a.size(), 1u);
    ASSERT_EQ(b.size(), 1u);
    EXPECT_NEAR(b[0], a[0], 0.01 * a[0]) << wire;
  }
  const double bf16 = summary("pp2_bf16")["comm_bytes_per_step"]["pp.send_bf16"].get<double>();
  const double e4m3 = summary("pp2_e4m3")["comm_bytes_per_step"]["pp.send_e4m3"].get<double>();
  EXPECT_NEAR(e4m3 / bf16, 0.5, 0.01);  // plus 4 bytes of scale per message

  const std::string zero = "--set train.steps=12 --set train.checkpoint_every=6"
                           " --set train.eval_every=6 --set parallel.pp=2 --set train.grad_accum=2";
  ASSERT_EQ(train(4, "o2", zero + " --set precision.level=O2"), 0) << log("o2");
  ASSERT_EQ(train(4, "o3", zero + " --set precision.level=O3"), 0) << log("o3");
  EXPECT_EQ(losses("o2"), losses("o3"));
  EXPECT_EQ(val_losses("o2"), val_losses("o3"));
  ASSERT_EQ(train(4, "o3_r", zero + " --set precision.level=O3 --resume " +
                                 path("o3/checkpoints/step-6")),
            0)
      << log("o3_r");
  const auto full = losses("o3");
  EXPECT_EQ(losses("o3_r"), std::vector<double>(full.end() - 6, full.end()));
}

// Layouts that cannot run are one-line errors before training starts.
TEST_F(DistTrain, BadTensorParallelLayoutsAreRefused) {
  const struct {
    int ranks;
    const char* extra;
    const char* message;
  } cases[] = {
      {0, "--set parallel.tp=2", "does not divide the 1 rank"},
      {2, "--set parallel.tp=4 --set model.n_head=4", "does not divide the 2 ranks"},
      {2, "--set parallel.tp=2 --set model.n_head=1 --set model.n_embd=64",
       "must divide model.n_head"},
      {0, "--set parallel.pp=2", "does not divide the 1 rank"},
      {2, "--set parallel.pp=2 --set parallel.tp=2", "does not divide the 2 ranks"},
      {0, "--set parallel.pp=3", "more stages than model.n_layer (2)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.extra);
    EXPECT_NE(train(c.ranks, "bad", std::string(c.extra) + " --set train.steps=2"), 0);
    EXPECT_NE(log("bad").find(c.message), std::string::npos) << log("bad");
    EXPECT_FALSE(fs::exists(path("bad/metrics.jsonl")));
  }
}

// DPO and GRPO at fp32 (docs/post_training.md): two tensor-parallel ranks, and two
// data-parallel ranks of one micro-batch each, take the steps of one process accumulating two
// micro-batches — the same pairs, prompts and samples, each pair or completion weighed once
// in the step's mean.
TEST_F(DistTrain, DpoAndGrpoEqualOneProcessUnderTensorAndDataParallelism) {
  ASSERT_EQ(train(0, "base", "--set precision.level=fp32 --set train.steps=4"), 0) << log("base");
  {
    std::ofstream pairs(path("pairs.jsonl")), prompts(path("prompts.jsonl"));
    const char* animals[] = {"cat", "dog", "bird", "horse", "mouse", "fox"};
    for (int i = 0; i < 24; ++i) {
      const std::string prompt = std::string("the ") + animals[i % 6] + " sat on the";
      pairs << nlohmann::json{{"prompt", prompt}, {"chosen", " rug"}, {"rejected", " mat"}}.dump() << "\n";
      // About a third of the barely trained model's samples contain a lower-case letter:
      // groups with mixed rewards, so every step has a policy gradient.
      prompts << nlohmann::json{{"prompt", prompt}, {"pattern", "[a-z]"}}.dump() << "\n";
    }
  }
  const std::string prep = std::string(FP8LM_BINARY) + " prepare --tokenizer byte --max-tokens 33 --out " +
                           path("pairs") + " " + path("pairs.jsonl") + " --val " + path("pairs.jsonl") +
                           " >" + path("prep.log") + " 2>&1";
  ASSERT_EQ(std::system(prep.c_str()), 0) << log("prep");
  const std::string common = "--set precision.level=fp32 --set train.steps=6 --set train.lr=1e-3"
                             " --set train.eval_every=6 --set train.eval_batches=2"
                             " --set train.init_from=" + path("base");
  const std::string dpo = common + " --set finetune.objective=dpo --set data.train=" +
                          path("pairs/train.bin") + " --set data.val=" + path("pairs/val.bin");
  const std::string grpo = common + " --set finetune.objective=grpo --set finetune.samples=2" +
                           " --set finetune.max_new_tokens=4 --set data.train=" +
                           path("prompts.jsonl") + " --set data.val=" + path("prompts.jsonl");
  for (const auto& [name, args] : {std::pair{std::string("dpo"), dpo}, std::pair{std::string("grpo"), grpo}}) {
    SCOPED_TRACE(name);
    ASSERT_EQ(train(0, name + "_one", args + " --set train.grad_accum=2"), 0) << log(name + "_one");
    ASSERT_EQ(train(2, name + "_tp2", args + " --set train.grad_accum=2 --set parallel.tp=2"), 0)
        << log(name + "_tp2");
    ASSERT_EQ(train(2, name + "_dp2", args), 0) << log(name + "_dp2");
    // GRPO's loss is about 0 (advantages of mean 0): its gradient norm carries the step.
    const char* key = name == "dpo" ? "loss" : "grad_norm";
    expect_close(metric(name + "_one", key), metric(name + "_tp2", key), 1e-5, 6);
    expect_close(metric(name + "_one", key), metric(name + "_dp2", key), 1e-5, 6);
    if (name == "grpo") {
      EXPECT_EQ(metric("grpo_one", "reward"), metric("grpo_dp2", "reward"));
      EXPECT_EQ(metric("grpo_one", "reward"), metric("grpo_tp2", "reward"));
    }
  }
}

// LoRA over data-parallel ranks (docs/post_training.md): the adapters' gradients are averaged
// as the level averages gradients — at fp32 two ranks of one micro-batch equal one process
// accumulating two; at O2 they go through the FP8 all-reduce and stay close.
TEST_F(DistTrain, LoraEqualsOneProcessUnderDataParallelism) {
  ASSERT_EQ(train(0, "base", "--set precision.level=fp32 --set train.steps=4"), 0) << log("base");
  for (const char* level : {"fp32", "O2"}) {
    SCOPED_TRACE(level);
    const std::string l = level;
    const std::string args = "--set precision.level=" + l + " --set train.steps=6 --set train.lr=1e-2" +
                             " --set finetune.lora_rank=4 --set train.init_from=" + path("base");
    ASSERT_EQ(train(0, "lora_one_" + l, args + " --set train.grad_accum=2"), 0) << log("lora_one_" + l);
    ASSERT_EQ(train(2, "lora_dp2_" + l, args), 0) << log("lora_dp2_" + l);
    expect_close(losses("lora_one_" + l), losses("lora_dp2_" + l), l == "fp32" ? 1e-5 : 2e-2, 6);
  }
}

}  // namespace
}  // namespace fp8lm
