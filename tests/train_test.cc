// End-to-end training: a tiny GPT on byte-level tokens. Exact resume (bit-identical losses)
// for each precision level, evaluation windows, and the errors for bad configurations,
// checkpoints and data.
#include "train/trainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/check.h"
#include "data/token_file.h"
#include "train/checkpoint.h"

namespace fp8lm {
namespace {

namespace fs = std::filesystem;

std::string tmpdir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/fp8lm_train_" + name + "_" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Byte tokens of a repetitive English-like text, so the tiny model has something to learn.
void write_data(const std::string& dir) {
  std::string text;
  for (int i = 0; text.size() < 40000; ++i)
    text += "the cat sat on the mat " + std::to_string(i % 17) + ". a dog ran. ";
  std::vector<uint16_t> t(text.begin(), text.end());
  const size_t val = t.size() / 10;
  write_token_file(dir + "/train.bin", t.size() - val, [&](const auto& s) { s(t.data(), t.size() - val); });
  write_token_file(dir + "/val.bin", val, [&](const auto& s) { s(t.data() + t.size() - val, val); });
}

TrainConfig tiny(const std::string& data, const std::string& out, const std::string& level) {
  TrainConfig c;
  c.preset = "tiny";
  c.seq_len = 32;
  c.train_path = data + "/train.bin";
  c.val_path = data + "/val.bin";
  c.tokenizer = "byte";
  c.batch_size = 4;
  c.grad_accum = 2;
  c.steps = 8;
  c.warmup_steps = 2;
  c.eval_every = 4;
  c.eval_batches = 2;
  c.checkpoint_every = 4;
  c.out_dir = out;
  c.level = level;
  return c;
}

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

class ResumeTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ResumeTest, ResumedRunReproducesLossesBitForBit) {
  const std::string level = GetParam();
  const std::string d = tmpdir("resume_" + level);
  write_data(d);
  const TrainResult full = train(tiny(d, d + "/full", level), "");
  const std::vector<double> a = losses(d + "/full/metrics.jsonl");
  ASSERT_EQ(a.size(), 8u);
  EXPECT_LT(a.back(), a.front());  // it learns
  // Resume from the step-4 checkpoint into another folder and run to step 8.
  train(tiny(d, d + "/resumed", level), d + "/full/checkpoints/step-4");
  const std::vector<double> b = losses(d + "/resumed/metrics.jsonl");
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(b[i], a[4 + i]) << "step " << 5 + i;
  // A run folder means its latest checkpoint; eval reproduces the logged validation loss.
  EXPECT_EQ(resolve_checkpoint(d + "/full"), d + "/full/checkpoints/step-8");
  const double v = evaluate_checkpoint(d + "/full", d + "/val.bin", 2, 0, 0);
  EXPECT_DOUBLE_EQ(v, full.final_val_loss);
}

INSTANTIATE_TEST_SUITE_P(Levels, ResumeTest, ::testing::Values("fp32", "bf16", "O1", "O2"));

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
  EXPECT_NE(err("[model]\npreset = \"gpt5\"\n").find("gpt5"), std::string::npos);
  EXPECT_NE(err("[train\n").find("cfg.toml:1"), std::string::npos);
  TrainConfig c;
  EXPECT_THROW(apply_overrides(c, {"train.nope=1"}), Error);
  EXPECT_THROW(apply_overrides(c, {"train.steps"}), Error);
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

}  // namespace
}  // namespace fp8lm
