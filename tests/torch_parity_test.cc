// fp8lm's fp32 GPT-2 against PyTorch (Debian's python3-torch): this test writes the weights,
// a batch and fp8lm's loss, logits and gradients, and tests/torch_parity.py recomputes them
// in float64 and requires relative error <= 1e-4 for each.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "model/gpt.h"
#include "tensor/safetensors.h"
#include "train/init_from.h"
#include "train/post_train.h"

namespace fp8lm {
namespace {

// Runs a Python script of tests/ under Debian's python3 (with python3-torch); its output.
std::string run_python(const std::string& script_and_args, int* status) {
  const char* python = std::getenv("FP8LM_PYTHON");
  const std::string cmd = std::string(python ? python : "/usr/bin/python3") + " " +
                          FP8LM_SOURCE_DIR + "/tests/" + script_and_args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *status = -1;
    return "popen failed";
  }
  std::string text;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  *status = ::pclose(p);
  std::printf("%s", text.c_str());
  return text;
}

TEST(TorchParity, Fp32LossLogitsAndGradients) {
  GptConfig cfg;
  cfg.n_layer = 2;
  cfg.n_head = 4;
  cfg.n_embd = 32;
  cfg.seq_len = 16;
  cfg.vocab_size = 100;  // padded to 128 inside fp8lm
  const size_t B = 2, T = 16, V = 100;
  const std::string dir = ::testing::TempDir() + "/fp8lm_torch_parity_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);

  GptParams params(cfg);
  params.init_gpt2(2024);
  params.save(dir + "/model.safetensors");
  std::vector<int32_t> tokens(B * T), targets(B * T);
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(V) - 1);
  for (size_t i = 0; i < B * T; ++i) {
    tokens[i] = d(rng);
    targets[i] = d(rng);
  }
  const Shape bt{static_cast<int64_t>(B), static_cast<int64_t>(T)};
  write_safetensors(dir + "/batch.safetensors", {{"tokens", {tokens.data(), DType::kI32, bt}},
                                                 {"targets", {targets.data(), DType::kI32, bt}}});

  Gpt model(params, ComputeMode::kF32, B, T);
  float loss = model.forward_backward(tokens.data(), targets.data());
  std::vector<float> logits(B * T * V);
  model.logits(tokens.data(), logits.data());
  std::vector<std::vector<float>> grads;
  std::vector<std::pair<std::string, ConstTensorView>> out = {
      {"loss", {&loss, DType::kF32, Shape{1}}},
      {"logits", {logits.data(), DType::kF32, Shape{static_cast<int64_t>(B * T), static_cast<int64_t>(V)}}}};
  grads.reserve(params.specs().size());
  for (size_t s = 0; s < params.specs().size(); ++s) {
    const ParamSpec& spec = params.specs()[s];
    grads.emplace_back(spec.numel());
    model.grad_values(s, grads.back().data());
    Shape shape = spec.shape;
    if (s == 0) shape = Shape{static_cast<int64_t>(V), cfg.n_embd};  // real rows only
    out.emplace_back(spec.name, ConstTensorView{grads.back().data(), DType::kF32, shape});
  }
  write_safetensors(dir + "/fp8lm.safetensors", out);

  int status = 0;
  const std::string text = run_python("torch_parity.py " + dir + " 4", &status);
  EXPECT_EQ(status, 0) << "PyTorch parity failed or python3-torch is missing:\n" << text;
  EXPECT_NE(text.find("worst relative error"), std::string::npos) << text;
}

// train.init_from on a Hugging Face GPT-2 file as published ("transformer." prefix, mask
// buffers, tied lm_head, config.json, F32/F16/BF16 tensors): fp8lm's fp32 logits from the
// loaded weights equal PyTorch's float64 logits on the same file within 1e-4 relative.
TEST(TorchParity, HuggingFaceGpt2FileLogits) {
  const std::string dir = ::testing::TempDir() + "/fp8lm_hf_parity_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  int status = 0;
  const std::string text = run_python("hf_gpt2_parity.py " + dir, &status);
  ASSERT_EQ(status, 0) << "python3-torch is missing or the script failed:\n" << text;

  const PretrainedWeights from(dir, 0);
  const GptConfig& cfg = from.config();
  EXPECT_EQ(cfg.n_layer, 2);
  EXPECT_EQ(cfg.n_head, 4);  // from config.json (32 / 64 would be no head at all)
  EXPECT_EQ(cfg.n_embd, 32);
  EXPECT_EQ(cfg.vocab_size, 100);
  EXPECT_EQ(cfg.seq_len, 24);
  GptParams params(cfg);
  for (size_t i = 0; i < params.specs().size(); ++i) {
    std::fill(params.at(i), params.at(i) + params.specs()[i].numel(), std::nanf(""));
    from.read(params.specs()[i].name, params.at(i));
  }
  const SafetensorsFile expected(dir + "/expected.safetensors");
  const ConstTensorView& tokens = expected.find("tokens")->view;
  const ConstTensorView& want = expected.find("logits")->view;
  const size_t B = static_cast<size_t>(tokens.shape[0]), T = static_cast<size_t>(tokens.shape[1]);
  const size_t V = static_cast<size_t>(cfg.vocab_size);
  ASSERT_EQ(static_cast<size_t>(want.numel()), B * T * V);
  Gpt model(params, ComputeMode::kF32, B, T, {}, false);
  std::vector<float> logits(B * T * V, std::nanf(""));
  model.logits(static_cast<const int32_t*>(tokens.data), logits.data());
  const float* w = static_cast<const float*>(want.data);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    ASSERT_TRUE(std::isfinite(logits[i])) << "logit " << i;
    worst = std::max(worst, std::abs(static_cast<double>(logits[i]) - w[i]));
    scale = std::max(scale, std::abs(static_cast<double>(w[i])));
  }
  ASSERT_GT(scale, 0.0);
  std::printf("Hugging Face GPT-2 file: logits relative error %.2e\n", worst / scale);
  EXPECT_LE(worst / scale, 1e-4);
  std::filesystem::remove_all(dir);
}

// DPO and GRPO at fp32 through the trainer's own micro-batch functions (post_train.h): the
// frozen reference read by train.init_from's loader, the policy's gradient from per-token
// weights. tests/post_train_parity.py recomputes both losses and every gradient with
// PyTorch autograd in float64; each must be within 1e-4 relative. GRPO is given a sampling
// policy other than the current one, so that ratios leave the clip interval.
TEST(TorchParity, DpoAndGrpoLossesAndGradients) {
  GptConfig cfg;
  cfg.n_layer = 2;
  cfg.n_head = 4;
  cfg.n_embd = 32;
  cfg.seq_len = 16;
  cfg.vocab_size = 100;
  const size_t B = 4, T = 16, V = 100;
  const double beta = 0.5, clip = 0.2, kl = 0.1;
  const std::string dir = ::testing::TempDir() + "/fp8lm_post_parity_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/ref");
  GptParams params(cfg), ref_params(cfg);
  params.init_gpt2(2024);
  ref_params.init_gpt2(7);
  params.save(dir + "/policy.safetensors");
  ref_params.save(dir + "/ref/model.safetensors");
  {
    std::FILE* f = std::fopen((dir + "/ref/config.json").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fprintf(f, R"({"model_type": "gpt2", "n_head": 4, "activation_function": "gelu_new"})");
    std::fclose(f);
  }
  // Rows: a prompt of 3..7 tokens (targets −1), then a response of 2..6 tokens; DPO pairs
  // share their prompt.
  std::mt19937 rng(5);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto make_rows = [&](bool pairs, std::vector<int32_t>& tok, std::vector<int32_t>& tgt) {
    tok.assign(B * T, 0);
    tgt.assign(B * T, -1);
    int prompt = 0;
    for (size_t b = 0; b < B; ++b) {
      if (!pairs || b % 2 == 0) prompt = uni(3, 7);
      const int n = prompt + uni(2, 6);
      for (int t = 0; t < static_cast<int>(T); ++t) {
        const bool shared = pairs && b % 2 == 1 && t < prompt;
        tok[b * T + static_cast<size_t>(t)] = shared ? tok[(b - 1) * T + static_cast<size_t>(t)]
                                                      : uni(0, static_cast<int>(V) - 1);
      }
      for (int t = prompt - 1; t < n - 1; ++t)
        tgt[b * T + static_cast<size_t>(t)] = tok[b * T + static_cast<size_t>(t) + 1];
    }
  };
  std::vector<int32_t> dpo_tok, dpo_tgt, grpo_tok, grpo_tgt;
  make_rows(true, dpo_tok, dpo_tgt);
  make_rows(false, grpo_tok, grpo_tgt);

  const PretrainedWeights from(dir + "/ref", 0);
  Gpt policy(params, ComputeMode::kF32, B, T);
  const FrozenWeights frozen(from, policy.specs(), policy.shard(), policy.mode(), {});
  ReferenceModel ref(frozen, policy, {}, nullptr);
  EXPECT_EQ(frozen.bytes(), params.numel() * sizeof(float));

  std::vector<std::pair<std::string, ConstTensorView>> out;
  std::vector<std::vector<float>> keep;
  keep.reserve(2 * (params.specs().size() + 1) + 2);
  auto add_grads = [&](const std::string& prefix) {
    for (size_t s = 0; s < params.specs().size(); ++s) {
      const ParamSpec& spec = params.specs()[s];
      keep.emplace_back(spec.numel(), std::nanf(""));
      policy.grad_values(s, keep.back().data());
      Shape shape = spec.shape;
      if (s == 0) shape = Shape{static_cast<int64_t>(V), cfg.n_embd};  // real rows only
      out.emplace_back(prefix + spec.name, ConstTensorView{keep.back().data(), DType::kF32, shape});
    }
  };
  auto add_scalar = [&](const std::string& name, double v) {
    keep.push_back({static_cast<float>(v)});
    out.emplace_back(name, ConstTensorView{keep.back().data(), DType::kF32, Shape{1}});
  };

  const DpoStats d =
      dpo_micro_batch(policy, ref, dpo_tok.data(), dpo_tgt.data(), beta, 2.0 / B, false);
  ASSERT_EQ(d.pairs, B / 2);
  add_scalar("dpo_loss", d.loss / static_cast<double>(d.pairs));
  add_grads("dpo.");

  // The sampling policy's losses: the policy's, moved by up to ±0.5 nats per token.
  GrpoRows rows;
  rows.inputs = grpo_tok;
  rows.targets = grpo_tgt;
  rows.advantages = {1.5, -0.5, -1.0, 0.7};
  policy.forward(grpo_tok.data(), grpo_tgt.data());
  std::vector<float> old(policy.token_losses(), policy.token_losses() + B * T);
  for (float& x : old) x += std::uniform_real_distribution<float>(-0.5f, 0.5f)(rng);
  const GrpoStats g = grpo_micro_batch(policy, ref, rows, clip, kl, 1.0 / B, false, old.data());
  ASSERT_EQ(g.rows, B);
  EXPECT_GT(g.clipped, 0.0);  // some ratios left [1 − clip, 1 + clip] and were clipped
  add_scalar("grpo_loss", g.loss / static_cast<double>(B));
  add_grads("grpo.");
  write_safetensors(dir + "/fp8lm.safetensors", out);

  std::vector<float> adv(rows.advantages.begin(), rows.advantages.end());
  const Shape bt{static_cast<int64_t>(B), static_cast<int64_t>(T)};
  write_safetensors(dir + "/batch.safetensors",
                    {{"dpo_tokens", {dpo_tok.data(), DType::kI32, bt}},
                     {"dpo_targets", {dpo_tgt.data(), DType::kI32, bt}},
                     {"grpo_tokens", {grpo_tok.data(), DType::kI32, bt}},
                     {"grpo_targets", {grpo_tgt.data(), DType::kI32, bt}},
                     {"grpo_advantages", {adv.data(), DType::kF32, Shape{static_cast<int64_t>(B)}}},
                     {"grpo_old_losses", {old.data(), DType::kF32, bt}}});
  int status = 0;
  const std::string text = run_python("post_train_parity.py " + dir + " 4 " + std::to_string(beta) +
                                          " " + std::to_string(clip) + " " + std::to_string(kl),
                                      &status);
  EXPECT_EQ(status, 0) << "PyTorch parity failed or python3-torch is missing:\n" << text;
  EXPECT_NE(text.find("worst relative error"), std::string::npos) << text;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fp8lm
