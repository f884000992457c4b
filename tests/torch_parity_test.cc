// fp8lm's fp32 GPT-2 against PyTorch (Debian's python3-torch): this test writes the weights,
// a batch and fp8lm's loss, logits and gradients, and tests/torch_parity.py recomputes them
// in float64 and requires relative error <= 1e-4 for each.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "model/gpt.h"
#include "tensor/safetensors.h"

namespace fp8lm {
namespace {

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

  const char* python = std::getenv("FP8LM_PYTHON");
  const std::string cmd = std::string(python ? python : "/usr/bin/python3") + " " +
                          FP8LM_SOURCE_DIR + "/tests/torch_parity.py " + dir + " 4 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string text;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  const int status = ::pclose(p);
  std::printf("%s", text.c_str());
  EXPECT_EQ(status, 0) << "PyTorch parity failed or python3-torch is missing:\n" << text;
  EXPECT_NE(text.find("worst relative error"), std::string::npos) << text;
}

}  // namespace
}  // namespace fp8lm
