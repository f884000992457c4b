// End-to-end training: a tiny GPT on byte-level tokens. Exact resume (bit-identical losses)
// for each precision level, evaluation windows, and the errors for bad configurations,
// checkpoints and data.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "kernels/gemm.h"
#include "kernels/simd.h"
#include "model/params.h"
#include "tiny_run.h"
#include "train/checkpoint.h"
#include "train/gpt_state.h"
#include "train/run_folder.h"
#include "train/telemetry.h"
#include "train/trainer.h"

namespace fp8lm {
namespace {

namespace fs = std::filesystem;
using test::tiny;
using test::tmpdir;
using test::write_data;

std::vector<double> losses(const std::string& metrics) {
  std::vector<double> out;
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

// "LEVEL", "LEVEL/RECIPE" or "LEVEL+STATE=FORMAT" (precision.master/m1/m2).
class ResumeTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ResumeTest, ResumedRunReproducesLossesBitForBit) {
  std::string param = GetParam();
  std::string state, state_format;
  if (const size_t plus = param.find('+'); plus != std::string::npos) {
    const std::string o = param.substr(plus + 1);
    state = o.substr(0, o.find('='));
    state_format = o.substr(o.find('=') + 1);
    param = param.substr(0, plus);
  }
  const std::string level = param.substr(0, param.find('/'));
  const std::string recipe = param.find('/') == std::string::npos ? "delayed" : param.substr(param.find('/') + 1);
  const std::string d = tmpdir("resume_" + level + "_" + recipe + "_" + state + state_format);
  write_data(d);
  auto cfg = [&](const std::string& out) {
    TrainConfig c = tiny(d, out, level);
    c.recipe = recipe;
    if (state == "master") c.master_format = state_format;
    if (state == "m2") c.m2_format = state_format;
    return c;
  };
  const TrainResult full = train(cfg(d + "/full"), "");
  const std::vector<double> a = losses(d + "/full/metrics.jsonl");
  ASSERT_EQ(a.size(), 8u);
  EXPECT_LT(a.back(), a.front());  // it learns
  // Resume from the step-4 checkpoint into another folder and run to step 8.
  train(cfg(d + "/resumed"), d + "/full/checkpoints/step-4");
  const std::vector<double> b = losses(d + "/resumed/metrics.jsonl");
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(b[i], a[4 + i]) << "step " << 5 + i;
  // A run folder means its latest checkpoint; eval reproduces the logged validation loss.
  EXPECT_EQ(resolve_checkpoint(d + "/full"), d + "/full/checkpoints/step-8");
  const double v = evaluate_checkpoint(d + "/full", d + "/val.bin", 2, 0, 0);
  EXPECT_DOUBLE_EQ(v, full.final_val_loss);
}

INSTANTIATE_TEST_SUITE_P(Levels, ResumeTest,
                         ::testing::Values("fp32", "bf16", "O1", "O2", "O2/jit", "O1/block",
                                           "O2/block", "O2/mxfp8", "O2+master=bf16",
                                           "O2+master=e4m3", "O2+m2=e4m3"),
                         [](const auto& p) {
                           std::string n = p.param;
                           for (char& ch : n)
                             if (ch == '/' || ch == '+' || ch == '=') ch = '_';
                           return n;
                         });

// precision.lm_head = level (the default) is BF16 at the bf16 and FP8 levels and FP32 at fp32,
// as trainer.json records; a resumed run keeps its checkpoint's format unless it is set (a run
// from before the default changed continues exactly with its FP32 head).
TEST(LmHeadDefault, FollowsTheLevelAndResumesInTheCheckpointsFormat) {
  const std::string d = tmpdir("lm_head_default");
  write_data(d);
  for (const char* level : {"fp32", "bf16", "O2"}) {
    TrainConfig c = tiny(d, d + "/" + level, level);
    c.steps = 2;
    c.checkpoint_every = 2;
    c.eval_every = 2;
    train(c, "");
    EXPECT_EQ(read_trainer_state(d + "/" + level + "/checkpoints/step-2").lm_head,
              std::string(level) == "fp32" ? "f32" : "bf16")
        << level;
  }
  TrainConfig f32 = tiny(d, d + "/f32", "O2");
  f32.lm_head = "f32";
  train(f32, "");
  const std::vector<double> a = losses(d + "/f32/metrics.jsonl");
  ASSERT_EQ(a.size(), 8u);
  TrainConfig resumed = tiny(d, d + "/resumed", "O2");  // lm_head unset
  train(resumed, d + "/f32/checkpoints/step-4");
  const std::vector<double> b = losses(d + "/resumed/metrics.jsonl");
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(b[i], a[4 + i]) << "step " << 5 + i;
  EXPECT_EQ(read_trainer_state(d + "/resumed/checkpoints/step-8").lm_head, "f32");
  // Set, it is the format from then on: the same start, other losses.
  TrainConfig bf16 = tiny(d, d + "/bf16head", "O2");
  bf16.lm_head = "bf16";
  train(bf16, d + "/f32/checkpoints/step-4");
  const std::vector<double> e = losses(d + "/bf16head/metrics.jsonl");
  ASSERT_EQ(e.size(), 4u);
  EXPECT_NE(e[0], a[4]);
  EXPECT_EQ(read_trainer_state(d + "/bf16head/checkpoints/step-8").lm_head, "bf16");
}

// What a run writes but the bits of the arithmetic: metrics without the speed.
std::string metrics_without_speed(const std::string& path) {
  std::ifstream f(path);
  std::string out, line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    j.erase("tokens_per_s");
    out += j.dump() + "\n";
  }
  return out;
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// AVX-512 (with and without the GEMM's BF16 dot products) and AVX2 runs are the same bits:
// every logged loss, gradient norm and validation loss, and the checkpoint's model and
// optimizer files, byte for byte. Reductions sum in a fixed pattern of 32 whatever the vector
// width (kernels/vec-inl.h); the GEMM sums each element over K in one order.
class TargetTest : public ::testing::TestWithParam<const char*> {
 protected:
  void TearDown() override {
    simd::force_target(0);
    set_num_threads(2);
  }
  // The tiny run at the parameter's "LEVEL" or "LEVEL/RECIPE", either with "+f32head"
  // (precision.lm_head = f32; else the level's), writing to dir/name.
  TrainConfig config(const std::string& dir, const std::string& name) const {
    std::string param = GetParam();
    const bool f32_head = param.ends_with("+f32head");
    if (f32_head) param.resize(param.size() - std::string("+f32head").size());
    const size_t slash = param.find('/');
    TrainConfig c = tiny(dir, dir + "/" + name, param.substr(0, slash));
    c.recipe = slash == std::string::npos ? "delayed" : param.substr(slash + 1);
    if (f32_head) c.lm_head = "f32";
    return c;
  }
  // Run folders a and b logged the same metrics (speed aside) and wrote the same checkpoint
  // bytes at `step`.
  static void expect_same_bits(const std::string& a, const std::string& b, int step) {
    EXPECT_EQ(metrics_without_speed(b + "/metrics.jsonl"),
              metrics_without_speed(a + "/metrics.jsonl"));
    const std::string ckpt = "/checkpoints/step-" + std::to_string(step) + "/";
    for (const char* f : {"model.safetensors", "optimizer.safetensors"})
      EXPECT_TRUE(file_bytes(b + ckpt + f) == file_bytes(a + ckpt + f)) << f;
  }
  std::string scratch(const std::string& what) const {
    std::string n = GetParam();
    for (char& ch : n)
      if (ch == '/' || ch == '+') ch = '_';
    const std::string d = tmpdir(what + "_" + n);
    write_data(d);
    return d;
  }
};

TEST_P(TargetTest, Avx512AndAvx2RunsAreTheSameBits) {
  std::vector<simd::Target> targets;
  for (const simd::Target& t : simd::available_targets())
    if (t.name == "avx512" || t.name == "avx2") targets.push_back(t);
  if (targets.size() < 2) GTEST_SKIP() << "needs a CPU with both AVX-512 and AVX2";
  const std::string d = scratch("targets");
  auto run = [&](const std::string& name, int64_t bits, bool dot) {
    simd::force_target(bits);
    simd::set_bf16_dot(dot);
    TrainConfig c = config(d, name);
    c.steps = 4;
    c.checkpoint_every = 4;
    c.eval_every = 2;
    const kernels::Bf16DotCount before = kernels::bf16_dot_count();
    train(c, "");
    const kernels::Bf16DotCount after = kernels::bf16_dot_count();
    // The bf16 level's Linear products and the BF16 LM head's: all on the dot kernel, as the
    // run's summary says (null where none ran).
    const auto summary = nlohmann::json::parse(std::ifstream(c.out_dir + "/summary.json"));
    const bool bf16_products = c.level == "bf16" || c.lm_head_operands() == DType::kBF16;
    if (dot && simd::bf16_dot_active() && bf16_products) {
      EXPECT_GT(after.products, before.products);
      EXPECT_EQ(after.on_dot - before.on_dot, after.products - before.products);
      EXPECT_EQ(summary["bf16_products_on_dot"], 1.0);
    } else if (!dot) {
      EXPECT_TRUE(summary["bf16_products_on_dot"].is_null());
    }
    simd::force_target(0);
    return d + "/" + name;
  };
  const std::string ref = run("avx512", targets[0].bits, false);
  // With the dot kernel (the FMA kernel again where the CPU lacks it), then AVX2.
  for (const std::string& other :
       {run("avx512bf16", targets[0].bits, true), run("avx2", targets[1].bits, false)}) {
    SCOPED_TRACE(other + " against " + ref);
    expect_same_bits(ref, other, 4);
  }
}

// One thread and two give the same bits: the GEMM sums each element in one order, and the
// reductions over rows (LayerNorm's and the biases' weight gradients, the gradient norm) add
// partial sums of blocks that do not depend on the thread count. A model wide enough that
// those reductions split into several blocks.
TEST_P(TargetTest, OneAndTwoThreadsAreTheSameBits) {
  const std::string d = scratch("threads");
  auto run = [&](int threads) {
    set_num_threads(threads);
    TrainConfig c = config(d, "t" + std::to_string(threads));
    c.n_embd = 128;
    c.seq_len = 64;
    c.batch_size = 8;
    c.steps = 3;
    c.checkpoint_every = 3;
    c.eval_every = 3;
    train(c, "");
    set_num_threads(2);
    return c.out_dir;
  };
  expect_same_bits(run(1), run(2), 3);
}

INSTANTIATE_TEST_SUITE_P(Levels, TargetTest,
                         ::testing::Values("fp32", "bf16", "O2", "O2/block", "O3",
                                           "O2+f32head"),
                         [](const auto& p) {
                           std::string n = p.param;
                           for (char& ch : n)
                             if (ch == '/' || ch == '+') ch = '_';
                           return n;
                         });

// The model reads live views of the optimizer's masters: bound once, it computes on every
// update (new payloads and new scales) exactly as a model bound after the updates does.
TEST(GptState, ModelBoundOnceSeesEveryUpdate) {
  const GptConfig cfg = gpt_preset("tiny");
  const size_t B = 2, T = 32;
  const Fp8Options jit = fp8_options("jit");  // forward scales from this batch alone
  auto opt = make_gpt_optimizer(cfg, PrecisionLevel::kO2, {}, 3);
  Gpt bound(cfg, ComputeMode::kFP8, B, T, jit);
  bound.set_weights(master_views(*opt));
  std::vector<int32_t> tok(B * T), tgt(B * T);
  for (size_t i = 0; i < tok.size(); ++i) {
    tok[i] = static_cast<int32_t>((i * 37 + 11) % 256);
    tgt[i] = static_cast<int32_t>((i * 53 + 5) % 256);
  }
  std::vector<float> before;
  for (const AdamW::Param& p : opt->params()) before.push_back(p.master.meta.scale_inv);
  const float first = bound.forward(tok.data(), tgt.data());
  for (int step = 0; step < 4; ++step) {
    bound.forward_backward(tok.data(), tgt.data());
    ASSERT_FALSE(opt->step(grad_views(bound), 0.05f).skipped);
  }
  int changed = 0;
  for (size_t i = 0; i < before.size(); ++i)
    changed += opt->params()[i].master.meta.scale_inv != before[i];
  ASSERT_GT(changed, 0) << "no master scale moved: the test would not see a stale one";
  Gpt fresh(cfg, ComputeMode::kFP8, B, T, jit, /*with_grads=*/false);
  fresh.set_weights(master_views(*opt));
  const float now = bound.forward(tok.data(), tgt.data());
  EXPECT_NE(now, first);
  EXPECT_EQ(now, fresh.forward(tok.data(), tgt.data()));
}

// Telemetry observes: a run sampled every 2 steps trains exactly as one without; each sampled
// step has one line per Linear × role and per other E4M3 gradient, with rates in [0, 1];
// a resume in the same folder replaces the later lines with identical ones.
TEST(Telemetry, RecordsEveryFp8CastWithoutChangingTheRun) {
  for (const std::string recipe : {"delayed", "block"}) {
    const std::string d = tmpdir("telemetry_" + recipe);
    write_data(d);
    TrainConfig plain = tiny(d, d + "/plain", "O2"), probed = tiny(d, d + "/probed", "O2");
    plain.recipe = probed.recipe = recipe;
    plain.telemetry_every = 0;
    probed.telemetry_every = 2;
    probed.what_if = recipe == "delayed" ? "e4m3" : "none";  // dy is E5M2: what would E4M3 do
    train(plain, "");
    train(probed, "");
    EXPECT_EQ(losses(d + "/probed/metrics.jsonl"), losses(d + "/plain/metrics.jsonl")) << recipe;
    EXPECT_FALSE(fs::exists(d + "/plain/telemetry.jsonl"));
    const std::string path = d + "/probed/telemetry.jsonl";
    std::map<int64_t, std::map<std::string, int>> roles;  // step → role → lines
    std::ifstream f(path);
    std::string line;
    while (std::getline(f, line)) {
      const auto j = nlohmann::json::parse(line);
      roles[j.at("step").get<int64_t>()][j.at("role").get<std::string>()]++;
      for (const char* k : {"underflow", "saturated"}) {
        const double v = j.at(k).get<double>();
        EXPECT_TRUE(v >= 0 && v <= 1) << line;
      }
      EXPECT_GT(j.at("amax").get<double>(), 0) << line;
      if (!j.at("snr_db").is_null()) {
        EXPECT_GT(j.at("snr_db").get<double>(), 10) << line;
      }
      if (j.at("role") == "dy" && recipe == "delayed") {
        EXPECT_EQ(j.at("dtype"), "e5m2") << line;
      }
    }
    const GptConfig cfg = probed.model();
    const int linears = 4 * cfg.n_layer;
    const int others = static_cast<int>(param_layout(cfg).size()) - linears;
    ASSERT_EQ(roles.size(), 4u) << recipe;  // steps 2, 4, 6, 8
    for (const auto& [step, r] : roles) {
      for (const char* role : {"x", "W", "dy", "dW"}) EXPECT_EQ(r.at(role), linears) << step;
      EXPECT_EQ(r.at("grad"), others) << step;
      EXPECT_EQ(r.count("x.wgrad"), recipe == "block" ? 1u : 0u) << step;
      if (recipe == "delayed") {
        EXPECT_EQ(r.at("dy@e4m3"), linears) << step;
        EXPECT_EQ(r.at("x@e4m3"), linears) << step;  // E4M3 already: delayed vs just in time
      } else {
        EXPECT_EQ(r.count("dy@e4m3"), 0u) << step;
      }
      for (const char* role : {"master", "m1", "m2"})
        EXPECT_EQ(r.at(role), linears + others) << step << " " << role;
    }
    const auto summary = nlohmann::json::parse(std::ifstream(d + "/probed/summary.json"));
    EXPECT_EQ(summary["telemetry"]["W"]["records"].get<int>(), 4 * linears);
    std::ifstream whole(path);
    const std::string before((std::istreambuf_iterator<char>(whole)), {});
    train(probed, d + "/probed/checkpoints/step-4");
    std::ifstream again(path);
    EXPECT_EQ(std::string((std::istreambuf_iterator<char>(again)), {}), before) << recipe;
  }
}

QuantRecord record(const std::string& tensor, const std::string& role, QuantStats s) {
  return {tensor, role, DType::kE4M3, ScalingMode::kTensor, s};
}

// Each alarm names its tensor and limit, once per tensor, role and kind.
TEST(Telemetry, AlarmsNameTheTensorOnce) {
  Alarms a(AlarmLimits{0.25, 1e-3, 8, 1.5});
  QuantStats under;
  under.n = under.nonzero = 100;
  under.underflow = 30;
  under.signal = 1;
  under.fourth = 0.03;  // kurtosis 3
  under.scale_min = under.scale_max = 1;
  QuantStats fine = under;
  fine.underflow = 0;
  std::vector<std::string> m = a.check_casts(25, {record("h.0.attn.c_attn.bias", "grad", under),
                                                  record("h.1.mlp.c_fc", "x", fine)});
  ASSERT_EQ(m.size(), 1u);
  EXPECT_NE(m[0].find("step 25: h.0.attn.c_attn.bias grad: 30% of the non-zero values underflow"),
            std::string::npos) << m[0];
  EXPECT_NE(m[0].find("telemetry.underflow_alarm = 25%"), std::string::npos) << m[0];
  // The same tensor again: not repeated. An input whose kurtosis grew 10x: raised.
  QuantStats heavy = fine;
  heavy.fourth = 0.3;
  m = a.check_casts(50, {record("h.0.attn.c_attn.bias", "grad", under),
                         record("h.1.mlp.c_fc", "x", heavy)});
  ASSERT_EQ(m.size(), 1u);
  EXPECT_NE(m[0].find("h.1.mlp.c_fc x: kurtosis 30"), std::string::npos) << m[0];
  QuantStats clipped = fine;
  clipped.saturated = 1;
  clipped.scale_min = 0x1p-126f;
  EXPECT_EQ(a.check_casts(75, {record("h.2.mlp.c_proj", "dy", clipped)}).size(), 2u);
  // Losses: a spike over the mean of the previous steps, once 5 are known.
  for (int i = 1; i <= 5; ++i) EXPECT_FALSE(a.check_loss(i, 4.0)) << i;
  EXPECT_FALSE(a.check_loss(6, 5.9));
  const auto spike = a.check_loss(7, 7.0);
  ASSERT_TRUE(spike);
  EXPECT_NE(spike->find("step 7: loss 7.0000"), std::string::npos) << *spike;
  EXPECT_EQ(a.raised().size(), 5u);
  Alarms off(AlarmLimits{1, 1, 0, 0});
  EXPECT_TRUE(off.check_casts(1, {record("t", "x", under)}).empty());
  for (int i = 1; i <= 6; ++i) off.check_loss(i, 1.0);
  EXPECT_FALSE(off.check_loss(7, 100.0));
}

// telemetry.stop_on_alarm ends the run with the alarm; the checkpoint before it stays.
TEST(Telemetry, StopOnAlarmEndsTheRun) {
  const std::string d = tmpdir("alarm_stop");
  write_data(d);
  TrainConfig c = tiny(d, d + "/run", "O2");
  c.telemetry_every = 6;
  c.underflow_alarm = 0;  // any underflow at all
  c.saturation_alarm = 0;
  c.stop_on_alarm = true;
  try {
    train(c, "");
    FAIL() << "no alarm";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("telemetry alarm at step 6: "), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(fs::exists(d + "/run/checkpoints/step-4"));
  EXPECT_FALSE(fs::exists(d + "/run/checkpoints/step-6"));
  EXPECT_EQ(losses(d + "/run/metrics.jsonl").size(), 6u);
}

TEST(Train, BadConfigurationsNameTheKey) {
  auto err = [](const std::string& toml) {
    try {
      parse_train_config(toml, "cfg.toml");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(err("[train]\nbatch_sise = 4\n").find("unknown key train.batch_sise"), std::string::npos);
  EXPECT_NE(err("[train]\nlr = -1\n").find("train.lr"), std::string::npos);
  EXPECT_NE(err("[train]\nsteps = \"ten\"\n").find("train.steps: expected an integer"),
            std::string::npos);
  EXPECT_NE(err("[precision]\nlevel = \"O9\"\n").find("O9"), std::string::npos);
  EXPECT_NE(err("[precision]\nlm_head = \"e4m3\"\n").find("precision.lm_head = 'e4m3'"),
            std::string::npos);
  EXPECT_NE(err("[model]\npreset = \"gpt5\"\n").find("gpt5"), std::string::npos);
  EXPECT_NE(err("[train\n").find("cfg.toml:1"), std::string::npos);
  TrainConfig c;
  EXPECT_THROW(apply_overrides(c, {"train.nope=1"}), Error);
  EXPECT_THROW(apply_overrides(c, {"train.steps"}), Error);
  // One value per --set: trailing TOML lines were silently dropped.
  EXPECT_THROW(apply_overrides(c, {"train.lr=1\nx = 2"}), Error);
  EXPECT_THROW(apply_overrides(c, {"train.lr=1\n[train]\nsteps = 1000000"}), Error);
  // Found by fuzzing: an integer beyond 2^53 for a real key read an empty optional, and a
  // bare word of invalid UTF-8 did not survive config.toml.
  EXPECT_THROW(apply_overrides(c, {"train.lr=9007199254740993"}), Error);
  EXPECT_THROW(parse_train_config("[train]\nlr = 9007199254740993\n", "cfg.toml"), Error);
  EXPECT_THROW(apply_overrides(c, {"train.out_dir=runs/a\xff"}), Error);
  // Bytes that decode past U+10FFFF (a 0xF5 lead) or to a surrogate are not UTF-8 either
  // (found by the config fuzzer: no TOML writer keeps them).
  EXPECT_THROW(apply_overrides(c, {"train.out_dir=runs/\xf5\x8f\x8d\x9a"}), Error);
  EXPECT_THROW(apply_overrides(c, {"train.out_dir=runs/\xed\xa0\x80"}), Error);
  apply_overrides(c, {"train.steps=3", "precision.level=fp32", "train.out_dir=x/y"});
  EXPECT_EQ(c.steps, 3);
  EXPECT_EQ(c.level, "fp32");
  EXPECT_EQ(c.out_dir, "x/y");
  // The resolved configuration parses back to itself.
  EXPECT_EQ(parse_train_config(c.to_toml(), "resolved").to_toml(), c.to_toml());
}

TEST(Train, CheckpointsOfAnotherShapeOrCorruptAreRejected) {
  const std::string d = tmpdir("badckpt");
  write_data(d);
  train(tiny(d, d + "/run", "O2"), "");
  TrainConfig other = tiny(d, d + "/other", "O2");
  other.n_embd = 32;
  try {
    train(other, d + "/run");
    FAIL() << "resumed a checkpoint of another shape";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint of a model"), std::string::npos) << e.what();
  }
  TrainConfig level = tiny(d, d + "/level", "fp32");
  EXPECT_THROW(train(level, d + "/run"), Error);
  // Corrupt optimizer file: a clear error naming it.
  const std::string opt = d + "/run/checkpoints/step-8/optimizer.safetensors";
  fs::resize_file(opt, 100);
  try {
    train(tiny(d, d + "/again", "O2"), d + "/run");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(resolve_checkpoint(d + "/nowhere"), Error);
}

// Every field of trainer.json is checked: a scaling state's ring position out of range
// corrupted the heap, a type mismatch surfaced as an internal JSON error, and an
// in-range but inconsistent position silently changed the resumed losses.
TEST(Train, TrainerJsonIsValidatedFieldByField) {
  const std::string d = tmpdir("trainerjson");
  write_data(d);
  train(tiny(d, d + "/run", "O2"), "");
  const std::string ck = d + "/run/checkpoints/step-8";
  const nlohmann::json good = nlohmann::json::parse(std::ifstream(ck + "/trainer.json"));
  using Edit = std::function<void(nlohmann::json&)>;
  const std::vector<std::pair<std::string, Edit>> edits = {
      {"pos -1", [](auto& j) { j["scaling"][0]["pos"] = -1; }},
      {"pos 100", [](auto& j) { j["scaling"][0]["pos"] = 100; }},
      {"pos 5 (in range, inconsistent)", [](auto& j) { j["scaling"][0]["pos"] = 5; }},
      {"filled 3", [](auto& j) { j["scaling"][0]["filled"] = 3; }},
      {"pos 1.5", [](auto& j) { j["scaling"][0]["pos"] = 1.5; }},
      {"pos string", [](auto& j) { j["scaling"][0]["pos"] = "8"; }},
      {"history short", [](auto& j) { j["scaling"][0]["history"].erase(0); }},
      {"history negative", [](auto& j) { j["scaling"][0]["history"][0] = -1.0; }},
      {"history null", [](auto& j) { j["scaling"][0]["history"][0] = nullptr; }},
      {"scale 0", [](auto& j) { j["scaling"][0]["scale"] = 0.0; }},
      {"scale_inv not 1/scale", [](auto& j) { j["scaling"][0]["scale_inv"] = 3.0; }},
      {"counter negative", [](auto& j) { j["scaling"][0]["counter"] = -4; }},
      {"jit_next 1", [](auto& j) { j["scaling"][0]["jit_next"] = 1; }},
      {"scaling missing", [](auto& j) { j.erase("scaling"); }},
      {"step 1e30", [](auto& j) { j["step"] = 1e30; }},
      {"step 7 in step-8", [](auto& j) { j["step"] = 7; }},
      {"n_embd 1.5", [](auto& j) { j["model"]["n_embd"] = 1.5; }},
      {"n_layer huge", [](auto& j) { j["model"]["n_layer"] = 1ull << 40; }},
      {"level O9", [](auto& j) { j["level"] = "O9"; }},
      {"recipe bogus", [](auto& j) { j["fp8"]["recipe"] = "bogus"; }},
      {"lm_head e4m3", [](auto& j) { j["lm_head"] = "e4m3"; }},
      {"mu 0", [](auto& j) { j["grad_scaling_mu"] = 0.0; }},
      {"batch_size -1", [](auto& j) { j["batch_size"] = -1; }},
      {"not an object", [](auto& j) { j = nlohmann::json::array(); }},
      {"seed 2^63", [](auto& j) { j["seed"] = 1ull << 63; }},
      {"mu 2^33", [](auto& j) { j["grad_scaling_mu"] = 8589934592.0; }},
      {"level O1 (optimizer file is O2)", [](auto& j) { j["level"] = "O1"; }},
      {"amax_window 17", [](auto& j) { j["fp8"]["amax_window"] = 17; }},
      {"n_layer 1", [](auto& j) { j["model"]["n_layer"] = 1; }},
      {"scaling short", [](auto& j) { j["scaling"].erase(0); }},
  };
  for (const auto& [what, edit] : edits) {
    SCOPED_TRACE(what);
    nlohmann::json j = good;
    edit(j);
    std::ofstream(ck + "/trainer.json") << j.dump();
    try {
      evaluate_checkpoint(ck, d + "/val.bin", 1, 0, 0);
      ADD_FAILURE() << "eval accepted it";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("trainer.json"), std::string::npos) << e.what();
    }
    EXPECT_THROW(train(tiny(d, d + "/resumed", "O2"), ck), Error);
    EXPECT_THROW(sample_checkpoint(ck, "a", 2, 0.0, 1), Error);
  }
  std::ofstream(ck + "/trainer.json") << good.dump();
  EXPECT_NO_THROW(evaluate_checkpoint(ck, d + "/val.bin", 1, 0, 0));
}

// A state scale read from disk that is NaN, zero or negative, or a non-finite master value,
// is refused by eval and resume (it would only produce NaN losses with exit 0).
TEST(Train, NonFiniteStatesOnDiskAreRefused) {
  const std::string d = tmpdir("nanstate");
  write_data(d);
  train(tiny(d, d + "/run", "O2"), "");
  const std::string ck = d + "/run/checkpoints/step-8";
  const std::string opt = ck + "/optimizer.safetensors";
  // File offset of a tensor's bytes, from the header.
  auto offset_of = [&](const std::string& name) {
    std::ifstream f(opt, std::ios::binary);
    uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 8);
    std::string h(n, ' ');
    f.read(h.data(), static_cast<std::streamsize>(n));
    return 8 + n + nlohmann::json::parse(h)[name]["data_offsets"][0].get<uint64_t>();
  };
  const std::string pristine = d + "/pristine.safetensors";
  fs::copy_file(opt, pristine);
  const float nan = std::nanf(""), inf = INFINITY;
  const std::vector<std::pair<std::string, float>> patches = {
      {"wte.weight.master_scale_inv", nan},  {"wte.weight.master_scale_inv", 0.0f},
      {"wte.weight.master_scale_inv", -1.0f}, {"h.0.ln_1.bias.m1_scale_inv", inf},
      {"h.1.mlp.c_fc.bias.m2_scale_inv", -0.5f}};
  for (const auto& [name, value] : patches) {
    SCOPED_TRACE(name + " = " + std::to_string(value));
    fs::copy_file(pristine, opt, fs::copy_options::overwrite_existing);
    std::fstream f(opt, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(offset_of(name)));
    f.write(reinterpret_cast<const char*>(&value), 4);
    f.close();
    EXPECT_THROW(train(tiny(d, d + "/resumed", "O2"), ck), Error);
    if (name.starts_with("wte.weight.master")) {
      EXPECT_THROW(evaluate_checkpoint(ck, d + "/val.bin", 1, 0, 0), Error);
    }
  }
  // An F16 master code of infinity (0x7C00).
  fs::copy_file(pristine, opt, fs::copy_options::overwrite_existing);
  {
    std::fstream f(opt, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(offset_of("wpe.weight.master") + 6));
    const uint16_t inf16 = 0x7C00;
    f.write(reinterpret_cast<const char*>(&inf16), 2);
  }
  try {
    evaluate_checkpoint(ck, d + "/val.bin", 1, 0, 0);
    ADD_FAILURE() << "eval accepted an infinite master";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("wpe.weight.master[3] is not finite"), std::string::npos)
        << e.what();
  }
  fs::copy_file(pristine, opt, fs::copy_options::overwrite_existing);
  EXPECT_NO_THROW(evaluate_checkpoint(ck, d + "/val.bin", 1, 0, 0));
}

TEST(Train, NonFiniteOrAbsurdHyperparametersAreRefused) {
  for (const std::string set :
       {"train.lr=inf", "train.lr=1e308", "train.lr=nan", "train.weight_decay=inf",
        "train.weight_decay=1e308", "train.grad_clip=inf", "train.min_lr=nan",
        "train.threads=100000", "train.threads=5000", "train.comm_timeout=-1",
        "train.comm_timeout=inf", "train.batch_size=2000000000"}) {
    SCOPED_TRACE(set);
    TrainConfig c;
    try {
      apply_overrides(c, {set});
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(set.substr(0, set.find('='))), std::string::npos)
          << e.what();
    }
  }
}

// Inputs are checked before step 1: a validation file shorter than one batch used to be
// found only after training, before the final checkpoint, losing the run.
TEST(Train, ShortValidationFileIsRefusedBeforeTraining) {
  const std::string d = tmpdir("shortval");
  write_data(d);
  std::vector<uint16_t> few(100, 'a');
  write_token_file(d + "/short.bin", few.size(), [&](const auto& s) { s(few.data(), few.size()); });
  TrainConfig c = tiny(d, d + "/run", "O2");
  c.val_path = d + "/short.bin";
  try {
    train(c, "");
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("short.bin"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(d + "/run/metrics.jsonl"));
}

TEST(Train, DefaultTokenizerIsFoundFromAnyFolder) {
  const TrainConfig c;
  EXPECT_TRUE(c.tokenizer_dir.empty());
  EXPECT_TRUE(fs::path(c.tokenizer_path()).is_absolute()) << c.tokenizer_path();
  if (!fs::exists(c.tokenizer_path() + "/encoder.json"))
    GTEST_SKIP() << "scripts/setup.sh has not fetched the GPT-2 tables";
  EXPECT_EQ(make_tokenizer("gpt2", c.tokenizer_path())->vocab_size(), 50257);
}

// One writer per run folder; a fresh run does not mix into another run's folder.
TEST(Train, RunFoldersTakeOneRunAndOneWriter) {
  const std::string d = tmpdir("runfolder");
  write_data(d);
  train(tiny(d, d + "/run", "O2"), "");
  try {
    train(tiny(d, d + "/run", "O2"), "");
    FAIL() << "a fresh run mixed into a finished one";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a run"), std::string::npos) << e.what();
  }
  // --overwrite starts afresh: the metrics hold steps 1..8 once.
  // Leftovers of killed writes: a checkpoint folder and a file's temporary copy.
  fs::create_directories(d + "/run/checkpoints/.step-3.tmp-99999");
  std::ofstream(d + "/run/summary.json.tmp.99999.0") << "{";
  train(tiny(d, d + "/run", "O2"), "", /*overwrite=*/true);
  EXPECT_EQ(losses(d + "/run/metrics.jsonl").size(), 8u);
  EXPECT_FALSE(fs::exists(d + "/run/checkpoints/.step-3.tmp-99999"));
  EXPECT_FALSE(fs::exists(d + "/run/summary.json.tmp.99999.0"));
  {
    RunFolder held(d + "/run", d + "/run", false);
    try {
      RunFolder second(d + "/run", d + "/run", false);
      FAIL() << "two writers in one folder";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("in use by another fp8lm run"), std::string::npos)
          << e.what();
    }
  }
  // A full disk: the failed metrics write surfaces instead of being lost silently.
  if (fs::exists("/dev/full")) {
    RunFolder f(d + "/full", "", false);
    fs::create_symlink("/dev/full", d + "/full/metrics.jsonl");
    EXPECT_THROW(f.append_metrics({{"step", 1}}), Error);
  }
}

}  // namespace
}  // namespace fp8lm
