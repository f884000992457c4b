// Fine-tuning end to end on a tiny model: starting from a checkpoint's weights, the loss as
// the mean over response tokens however the rows fall into micro-batches, exact resume.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/example_file.h"
#include "data/loader.h"
#include "data/sft_jsonl.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "model/gpt.h"
#include "model/lora.h"
#include "train/inference.h"
#include "train/init_from.h"
#include "train/model_values.h"
#include "train/trainer.h"
#include "tiny_run.h"

namespace fp8lm {
namespace {

namespace fs = std::filesystem;
using test::tiny;
using test::tmpdir;
using test::write_data;

// A prompt/response task on the tiny corpus's words (responses of varied lengths, so rows
// hold different numbers of targets).
void write_task(const std::string& dir) {
  const char* animals[] = {"cat", "dog", "bird", "horse", "mouse"};
  std::ofstream f(dir + "/task.jsonl");
  for (int i = 0; i < 40; ++i) {
    const std::string a = animals[i % 5];
    f << nlohmann::json{{"prompt", "the " + a + " sat on the"},
                        {"response", std::string(" mat") + std::string(static_cast<size_t>(i % 4), '!')}}
             .dump()
      << "\n";
  }
  f.close();
  const ByteTokenizer tok;
  const std::vector<Example> ex = read_sft_jsonl(dir + "/task.jsonl", tok, 33);
  write_example_file(dir + "/sft_train.bin", std::vector<Example>(ex.begin(), ex.begin() + 32));
  write_example_file(dir + "/sft_val.bin", std::vector<Example>(ex.begin() + 32, ex.end()));
}

// Preference pairs that go against what the pre-trained model prefers (" rug" chosen over
// the corpus's " mat"), and GRPO prompts rewarded by exact match (and, for a fifth of them,
// by a pattern).
void write_preference_tasks(const std::string& dir) {
  const char* animals[] = {"cat", "dog", "bird", "horse", "mouse"};
  std::ofstream pairs(dir + "/pairs.jsonl"), prompts(dir + "/prompts.jsonl");
  for (int i = 0; i < 40; ++i) {
    const std::string a = animals[i % 5], prompt = "the " + a + " sat on the";
    pairs << nlohmann::json{{"prompt", prompt}, {"chosen", " rug"}, {"rejected", " mat"}}.dump()
          << "\n";
    nlohmann::json p{{"prompt", prompt}};
    if (i % 5 == 4)
      p["pattern"] = "^ ma";
    else
      p["answer"] = " mat";
    prompts << p.dump() << "\n";
  }
  pairs.close();
  const ByteTokenizer tok;
  const std::vector<Example> ex = read_pairs_jsonl(dir + "/pairs.jsonl", tok, 33);
  ASSERT_EQ(ex.size(), 80u);
  write_example_file(dir + "/dpo_train.bin", std::vector<Example>(ex.begin(), ex.begin() + 64),
                     kPreferencePairs);
  write_example_file(dir + "/dpo_val.bin", std::vector<Example>(ex.begin() + 64, ex.end()),
                     kPreferencePairs);
}

TrainConfig sft(const TrainConfig& base, const std::string& data, const std::string& out) {
  TrainConfig c = base;
  c.train_path = data + "/sft_train.bin";
  c.val_path = data + "/sft_val.bin";
  c.out_dir = out;
  c.telemetry_every = 0;
  return c;
}

std::vector<double> metric(const std::string& run, const char* key) {
  std::vector<double> out;
  std::ifstream f(run + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains(key)) out.push_back(j[key].get<double>());
  }
  return out;
}

// Runs `c` (8 steps) in `full`, then again in `cut` resumed from full's step-4 checkpoint;
// steps 5–8 of every `keys` metric must be equal, bit for bit.
void expect_exact_resume(TrainConfig c, const std::string& full, const std::string& cut,
                         const std::vector<const char*>& keys, const std::string& what) {
  c.out_dir = full;
  train(c, "", true);
  c.out_dir = cut;
  train(c, full + "/checkpoints/step-4", false);
  for (const char* key : keys) {
    const std::vector<double> a = metric(full, key), b = metric(cut, key);
    ASSERT_EQ(a.size(), 8u) << what << " " << key;
    ASSERT_EQ(b.size(), 4u) << what << " " << key;
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(a[4 + i], b[i]) << what << " " << key << " step " << 5 + i;
  }
}

// Training `c` (resuming from `resume` when given) must fail with a one-line error that
// contains `want`.
void expect_error(const TrainConfig& c, const std::string& want, const std::string& resume = "") {
  try {
    train(c, resume, resume.empty());
    ADD_FAILURE() << "accepted; wanted: " << want;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
}

class Finetune : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new std::string(tmpdir("data"));
    write_data(*data_);
    write_task(*data_);
    write_preference_tasks(*data_);
    pretrained_ = new std::string(*data_ + "/pretrained");
    train(tiny(*data_, *pretrained_, "fp32"), "", true);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*data_);
    delete data_;
    delete pretrained_;
  }
  static std::string* data_;
  static std::string* pretrained_;
};
std::string* Finetune::data_ = nullptr;
std::string* Finetune::pretrained_ = nullptr;

// The first step's loss of a run started from a checkpoint is the loss of the checkpoint's
// weights on that step's rows, computed here by hand as the mean over the response tokens
// of all the step's micro-batches.
TEST_F(Finetune, StartsFromTheCheckpointAndAveragesOverResponseTokens) {
  const std::string out = tmpdir("init");
  TrainConfig c = sft(tiny(*data_, "", "fp32"), *data_, out);
  c.init_from = *pretrained_;
  c.steps = 1;
  train(c, "", true);
  const std::vector<double> got = metric(out, "loss");
  ASSERT_EQ(got.size(), 1u);

  GptParams params(c.model());
  params.load(*pretrained_ + "/checkpoints/step-8/model.safetensors");
  const size_t B = 4, T = 32;
  Gpt model(params, ComputeMode::kF32, B, T, {}, false);
  const ExampleFile f(c.train_path);
  const ExampleLoader loader(f, B, T, static_cast<uint64_t>(c.seed));
  std::vector<int32_t> in(B * T), tgt(B * T);
  double sum = 0, n = 0;
  for (int i = 0; i < c.grad_accum; ++i) {
    loader.train_batch(i, in.data(), tgt.data());
    sum += static_cast<double>(model.forward(in.data(), tgt.data())) * static_cast<double>(B * T);
    n += static_cast<double>(std::count_if(tgt.begin(), tgt.end(), [](int32_t t) { return t >= 0; }));
  }
  ASSERT_GT(n, 0);
  ASSERT_LT(n, static_cast<double>(c.grad_accum * B * T) / 4);  // mostly prompt and padding
  EXPECT_NEAR(got[0], sum / n, 1e-5 * sum / n);
  fs::remove_all(out);
}

// The same rows as one micro-batch of 8 or two of 4 give the same losses (the weight of a
// target does not depend on its row's micro-batch), and the model learns the task.
TEST_F(Finetune, MicroBatchSplitDoesNotChangeTheLoss) {
  const std::string a = tmpdir("split_a"), b = tmpdir("split_b");
  TrainConfig c = sft(tiny(*data_, "", "fp32"), *data_, a);
  c.init_from = *pretrained_;
  c.steps = 12;
  c.checkpoint_every = 0;
  train(c, "", true);
  c.out_dir = b;
  c.batch_size = 8;
  c.grad_accum = 1;
  train(c, "", true);
  const std::vector<double> la = metric(a, "loss"), lb = metric(b, "loss");
  ASSERT_EQ(la.size(), 12u);
  ASSERT_EQ(lb.size(), 12u);
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-5 * la[i]) << "step " << i + 1;
  const std::vector<double> val = metric(a, "val_loss");
  ASSERT_GE(val.size(), 2u);
  EXPECT_LT(val.back(), 0.95 * val.front());
  fs::remove_all(a);
  fs::remove_all(b);
}

// Fine-tuning resumes bit for bit at fp32 and O2 (the epoch order, the target weights).
TEST_F(Finetune, ResumesBitForBit) {
  for (const char* level : {"fp32", "O2"}) {
    const std::string full = tmpdir(std::string("full_") + level);
    const std::string cut = tmpdir(std::string("cut_") + level);
    TrainConfig c = sft(tiny(*data_, "", level), *data_, full);
    c.init_from = *pretrained_;
    expect_exact_resume(c, full, cut, {"loss"}, level);
    EXPECT_EQ(metric(full, "val_loss").back(), metric(cut, "val_loss").back()) << level;
    fs::remove_all(full);
    fs::remove_all(cut);
  }
}

// LoRA at fp32 and O2: the adapted model starts as the base (B = 0: the first loss is full
// fine-tuning's, to the bit, at fp32), only the adapters train and are checkpointed, resume
// is exact, eval of the checkpoint gives the run's last validation loss, and the merged model
// fp8lm merge writes is the base plus s·A·B (at fp32 the model the adapters trained).
TEST_F(Finetune, LoraTrainsTheAdaptersOnlyResumesAndMerges) {
  for (const char* level : {"fp32", "O2"}) {
    const std::string full = tmpdir(std::string("lora_") + level);
    const std::string cut = tmpdir(std::string("lora_cut_") + level);
    TrainConfig c = sft(tiny(*data_, full, level), *data_, full);
    c.init_from = *pretrained_;
    c.lora_rank = 4;
    c.lr = 1e-2;
    expect_exact_resume(c, full, cut, {"loss"}, level);
    EXPECT_EQ(metric(full, "val_loss").back(), metric(cut, "val_loss").back()) << level;
    const std::vector<double> loss = metric(full, "loss"), val = metric(full, "val_loss");
    EXPECT_LT(val.back(), 0.98 * val.front()) << level;  // it learns (8 steps)
    EXPECT_LT(loss.back(), 0.95 * loss.front()) << level;
    if (std::string(level) == "fp32") {
      const std::string plain = tmpdir("lora_plain");
      TrainConfig p = sft(tiny(*data_, plain, level), *data_, plain);
      p.init_from = *pretrained_;
      p.steps = 1;
      train(p, "", true);
      EXPECT_EQ(metric(plain, "loss")[0], loss[0]);
      fs::remove_all(plain);
    }
    const std::string ckpt = full + "/checkpoints/step-8";
    EXPECT_TRUE(fs::exists(ckpt + "/adapters.safetensors"));
    EXPECT_FALSE(fs::exists(ckpt + "/model.safetensors"));
    size_t adapters = 0;
    for (const ParamSpec& s : lora_layout(c.model(), c.lora())) adapters += s.numel();
    const auto summary = nlohmann::json::parse(std::ifstream(full + "/summary.json"));
    EXPECT_EQ(summary["trainable_params"].get<size_t>(), adapters);
    EXPECT_EQ(evaluate_checkpoint(full, c.val_path, c.eval_batches, 0, 0), val.back()) << level;

    const TrainerState t = read_trainer_state(ckpt);
    const GptParams merged = load_model_values(ckpt, t);
    export_model(full, full + "/merged");
    const PretrainedWeights exported(full + "/merged", 0);
    const PretrainedWeights base(*pretrained_, 0);
    std::vector<float> v, b;
    size_t changed = 0;
    for (size_t i = 0; i < merged.specs().size(); ++i) {
      const ParamSpec& s = merged.specs()[i];
      v.resize(s.numel());
      b.resize(s.numel());
      exported.read(s.name, v.data());
      base.read(s.name, b.data());
      EXPECT_EQ(std::memcmp(v.data(), merged.at(i), v.size() * sizeof(float)), 0) << s.name;
      const bool differs = std::memcmp(v.data(), b.data(), v.size() * sizeof(float)) != 0;
      changed += differs;
      if (s.name.find(".lora_") == std::string::npos && !s.linear_weight) {
        EXPECT_FALSE(differs) << s.name;
      }
    }
    EXPECT_EQ(changed, 8u) << level;  // the four Linear weights of each of the 2 layers
    if (std::string(level) == "fp32") {  // the merged model evaluates as the adapted one did
      Gpt model(merged, ComputeMode::kF32, static_cast<size_t>(c.batch_size),
                static_cast<size_t>(c.seq_len), {}, false);
      const DataSource data(c.val_path, merged.config().vocab_size,
                            static_cast<size_t>(c.batch_size), static_cast<size_t>(c.seq_len), 0);
      EXPECT_NEAR(evaluate(model, data, c.eval_batches), val.back(), 1e-5 * val.back());
    }
    fs::remove_all(full);
    fs::remove_all(cut);
  }
}

TrainConfig dpo(const TrainConfig& base, const std::string& data, const std::string& pretrained) {
  TrainConfig c = base;
  c.train_path = data + "/dpo_train.bin";
  c.val_path = data + "/dpo_val.bin";
  c.telemetry_every = 0;
  c.objective = "dpo";
  c.init_from = pretrained;
  c.lr = 3e-3;
  c.min_lr = 3e-4;
  c.eval_batches = 4;
  return c;
}

TrainConfig grpo(const TrainConfig& base, const std::string& data, const std::string& pretrained) {
  TrainConfig c = base;
  c.train_path = data + "/prompts.jsonl";
  c.val_path = data + "/prompts.jsonl";
  c.telemetry_every = 0;
  c.objective = "grpo";
  c.init_from = pretrained;
  c.samples = 4;
  c.max_new_tokens = 4;
  c.eval_batches = 1;
  return c;
}

// DPO on the pairs raises the held-out preference accuracy, and resumes bit for bit (fp32,
// O2: the reference model's E4M3 weights are made again from train.init_from).
TEST_F(Finetune, DpoLearnsThePreferenceAndResumesBitForBit) {
  for (const char* level : {"fp32", "O2"}) {
    const std::string full = tmpdir(std::string("dpo_") + level);
    const std::string cut = tmpdir(std::string("dpo_cut_") + level);
    TrainConfig c = dpo(tiny(*data_, full, level), *data_, *pretrained_);
    c.eval_every = 1;
    expect_exact_resume(c, full, cut, {"loss"}, level);
    const std::vector<double> acc = metric(full, "val_dpo_accuracy");
    const std::vector<double> pref = metric(full, "val_preference_accuracy");
    const std::vector<double> val = metric(full, "val_loss");
    ASSERT_EQ(acc.size(), 9u);  // before the first step, then after each
    ASSERT_EQ(pref.size(), 9u);
    EXPECT_EQ(acc.back(), metric(cut, "val_dpo_accuracy").back()) << level;
    EXPECT_EQ(acc.back(), 1.0) << level;   // every held-out pair preferred to the reference
    EXPECT_EQ(pref.back(), 1.0) << level;  // and by the policy itself
    EXPECT_EQ(pref.front(), 0.0) << level;  // which the starting model never did
    EXPECT_NEAR(val.front(), std::log(2.0), 0.01) << level;  // at the reference: log 2
    EXPECT_LT(val.back(), 0.5 * std::log(2.0)) << level;
    fs::remove_all(full);
    fs::remove_all(cut);
  }
}

// GRPO samples, rewards (exact match and pattern) and resumes bit for bit: the samples of a
// step are a function of the seed and the step.
TEST_F(Finetune, GrpoResumesBitForBit) {
  for (const char* level : {"fp32", "O2"}) {
    const std::string full = tmpdir(std::string("grpo_") + level);
    const std::string cut = tmpdir(std::string("grpo_cut_") + level);
    TrainConfig c = grpo(tiny(*data_, full, level), *data_, *pretrained_);
    expect_exact_resume(c, full, cut, {"loss", "reward"}, level);
    const std::vector<double> ra = metric(full, "reward");
    for (const double r : ra) EXPECT_TRUE(r >= 0 && r <= 1) << r;
    EXPECT_EQ(metric(full, "val_reward").size(), 3u) << level;  // steps 0, 4 and 8
    EXPECT_EQ(metric(full, "val_reward").back(), metric(cut, "val_reward").back()) << level;
    fs::remove_all(full);
    fs::remove_all(cut);
  }
}

// Each wrong combination of objective, data and layout is a one-line error naming the key
// or the file (and line).
TEST_F(Finetune, PreferenceAndRewardMistakesAreOneLineErrors) {
  const std::string out = tmpdir("pref_bad");
  const TrainConfig d = dpo(tiny(*data_, out, "fp32"), *data_, *pretrained_);
  TrainConfig c = d;
  c.init_from.clear();
  expect_error(c, "finetune.objective = dpo: needs train.init_from");
  c = d;
  c.pp = 2;
  expect_error(c, "finetune.objective = dpo: not with parallel.pp = 2");
  c = d;
  c.batch_size = 3;
  expect_error(c, "train.batch_size = 3: DPO needs an even batch");
  c = d;
  c.objective = "lm";
  expect_error(c, "dpo_train.bin: preference pairs: set finetune.objective = dpo");
  c = sft(d, *data_, out);
  expect_error(c, "sft_train.bin: not preference pairs");
  const TrainConfig g = grpo(tiny(*data_, out, "fp32"), *data_, *pretrained_);
  c = g;
  c.batch_size = 6;
  expect_error(c, "GRPO needs a multiple of finetune.samples (4)");
  c = g;
  c.max_new_tokens = 15;  // 19 prompt tokens + 15 + the end mark > 33
  expect_error(c, "prompts.jsonl:1: the prompt has 19 tokens; with 15 new ones");
  {
    std::ofstream f(*data_ + "/bad_prompts.jsonl");
    f << R"({"prompt": "a", "answer": " b"})" << "\n" << R"({"prompt": "c"})" << "\n"
      << R"({"prompt": "d", "pattern": "(("})" << "\n";
  }
  c = g;
  c.train_path = *data_ + "/bad_prompts.jsonl";
  expect_error(c, "bad_prompts.jsonl:2: no \"answer\" or \"pattern\"");
  c.reward_command = "exit 3";
  expect_error(c, "finetune.reward_command \"exit 3\" failed");
  fs::remove_all(out);
}

// DPO with LoRA: the frozen base is also the reference (one frozen copy, as many bytes as
// DPO's reference alone), and the adapters learn the preference.
TEST_F(Finetune, LoraDpoSharesTheBaseAsItsReference) {
  for (const char* level : {"fp32", "O2"}) {
    const std::string with = tmpdir(std::string("lora_dpo_") + level);
    const std::string without = tmpdir(std::string("dpo_ref_") + level);
    TrainConfig c = dpo(tiny(*data_, without, level), *data_, *pretrained_);
    c.steps = 2;
    train(c, "", true);
    c = dpo(tiny(*data_, with, level), *data_, *pretrained_);
    c.lora_rank = 4;
    // 2e-2 learned the preference by step 3 and then diverged at step 8 at O2 under one
    // build's rounding (-O2 with sanitizers); 1e-2 ends at loss 0.46 in every build.
    c.lr = 1e-2;
    c.eval_every = 8;
    train(c, "", true);
    auto frozen_mib = [](const std::string& run) {
      const auto j = nlohmann::json::parse(std::ifstream(run + "/summary.json"));
      return j["peak_mib_by_category"]["frozen"].get<double>();
    };
    EXPECT_GT(frozen_mib(with), 0.0);
    EXPECT_EQ(frozen_mib(with), frozen_mib(without)) << level;
    const std::vector<double> pref = metric(with, "val_preference_accuracy");
    ASSERT_EQ(pref.size(), 2u);
    EXPECT_EQ(pref.front(), 0.0) << level;
    EXPECT_EQ(pref.back(), 1.0) << level;
    fs::remove_all(with);
    fs::remove_all(without);
  }
}

// LoRA's mistakes: what it cannot run with, a resume that changes the adapters, a base that
// changed under the checkpoint, a LoRA checkpoint as starting weights.
TEST_F(Finetune, LoraMistakesAreOneLineErrors) {
  const std::string out = tmpdir("lora_bad");
  TrainConfig l = sft(tiny(*data_, out, "O2"), *data_, out);
  l.init_from = *pretrained_;
  l.lora_rank = 4;
  TrainConfig c = l;
  c.init_from.clear();
  expect_error(c, "finetune.lora_rank = 4: LoRA needs train.init_from");
  c = l;
  c.tp = 2;
  expect_error(c, "LoRA runs without tensor or pipeline parallelism");
  c = l;
  c.recipe = "block";
  expect_error(c, "LoRA needs a per-tensor recipe");
  c = l;
  c.level = "O3";
  expect_error(c, "use precision.level = O2");
  c = l;
  c.lora_rank = 65;  // the tiny model is 64 wide
  expect_error(c, "finetune.lora_rank = 65: more than attn.c_attn's 64");
  c = l;
  c.lora_targets = "attn.c_attn,mlp";
  expect_error(c, "finetune.lora_targets = 'attn.c_attn,mlp': 'mlp' is not one of");

  // A run on a copy of the base, then resumes that change the adapters or the base.
  const std::string base = out + "/base";
  fs::create_directories(base);
  fs::copy_file(*pretrained_ + "/checkpoints/step-8/model.safetensors", base + "/model.safetensors");
  const std::string run = out + "/run";
  c = l;
  c.init_from = base + "/model.safetensors";
  c.out_dir = run;
  c.steps = 4;
  train(c, "", true);
  TrainConfig r = c;
  r.steps = 8;
  r.lora_rank = 2;
  expect_error(r, "checkpoint of LoRA rank 4 on all, the config asks for LoRA rank 2 on all", run);
  r.lora_rank = 0;
  expect_error(r, "the config asks for full training", run);
  fs::copy_file(*pretrained_ + "/checkpoints/step-4/model.safetensors", base + "/model.safetensors",
                fs::copy_options::overwrite_existing);  // same size, other values
  r = c;
  r.steps = 8;
  expect_error(r, "is not the file the adapters were trained on", run);
  c = l;
  c.init_from = run;
  expect_error(c, "a LoRA checkpoint (adapters only");
  fs::remove_all(out);
}

TEST_F(Finetune, MixedKindsAndShapeOverridesAreRefused) {
  TrainConfig c = sft(tiny(*data_, "", "fp32"), *data_, tmpdir("bad"));
  c.val_path = *data_ + "/val.bin";
  try {
    train(c, "", true);
    ADD_FAILURE() << "a token file as validation of example files was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.train and data.val must be of one kind"),
              std::string::npos) << e.what();
  }
  c = sft(tiny(*data_, "", "fp32"), *data_, tmpdir("bad"));
  c.init_from = *pretrained_;
  c.n_layer = 3;
  try {
    c.validate();
    ADD_FAILURE() << "model.n_layer with train.init_from was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.n_layer = 3: the model's shape comes from train.init_from"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fp8lm
