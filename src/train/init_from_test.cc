// train.init_from's reader: the values land where the model wants them, and every way a
// file can fail to be the GPT-2 it claims is an Error naming the file and the tensor or key.
#include "train/init_from.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/check.h"
#include "model/params.h"
#include "tensor/safetensors.h"

namespace fp8lm {
namespace {

GptConfig small_config() {
  GptConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 64;
  c.seq_len = 16;
  c.vocab_size = 70;  // padded to 128 inside fp8lm
  return c;
}

class InitFrom : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/fp8lm_init_from_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    tensors_.clear();
    shapes_.clear();
    params_.init_gpt2(5);
    // Every tensor as Hugging Face names it, plus what `edit` changes.
    for (size_t i = 0; i < params_.specs().size(); ++i) {
      const ParamSpec& s = params_.specs()[i];
      Shape shape = i == 0 ? Shape{cfg_.vocab_size, cfg_.n_embd} : s.shape;
      tensors_["transformer." + s.name] =
          std::vector<float>(params_.at(i), params_.at(i) + shape.numel());
      shapes_["transformer." + s.name] = shape;
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes model.safetensors (and config.json when not empty); returns the file's path.
  std::string write(const std::string& config_json = "") {
    std::vector<std::pair<std::string, ConstTensorView>> out;
    for (const auto& [name, v] : tensors_)
      out.emplace_back(name, ConstTensorView{v.data(), DType::kF32, shapes_.at(name)});
    const std::string path = dir_ + "/model.safetensors";
    write_safetensors(path, out);
    if (!config_json.empty()) std::ofstream(dir_ + "/config.json") << config_json;
    return path;
  }
  void add(const std::string& name, Shape shape, float value = 0.5f) {
    tensors_[name] = std::vector<float>(static_cast<size_t>(shape.numel()), value);
    shapes_[name] = shape;
  }
  std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  GptConfig cfg_ = small_config();
  GptParams params_{cfg_};
  std::string dir_;
  std::map<std::string, std::vector<float>> tensors_;
  std::map<std::string, Shape> shapes_;
};

TEST_F(InitFrom, ValuesLandInTheModelsLayout) {
  add("transformer.h.0.attn.bias", Shape{1, 1, 16, 16}, 1.0f);
  add("transformer.h.1.attn.masked_bias", Shape{}, -1e4f);
  tensors_["lm_head.weight"] = tensors_["transformer.wte.weight"];
  shapes_["lm_head.weight"] = shapes_["transformer.wte.weight"];
  const std::string path = write();
  const PretrainedWeights from(path, 8);  // train on 8 of the 16 positions
  const GptConfig& c = from.config();
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.n_head, 1);  // no config.json: GPT-2's 64-wide heads
  EXPECT_EQ(c.n_embd, 64);
  EXPECT_EQ(c.vocab_size, 70);
  EXPECT_EQ(c.seq_len, 8);
  GptParams got(c);
  for (size_t i = 0; i < got.specs().size(); ++i) {
    const ParamSpec& s = got.specs()[i];
    std::fill(got.at(i), got.at(i) + s.numel(), std::nanf(""));
    from.read(s.name, got.at(i));
    const float* want = params_.at(i);  // same name, same order, the original's values
    for (size_t k = 0; k < s.numel(); ++k) {
      const float w = i == 0 && k >= 70 * 64 ? 0.0f : want[k];  // wte padding rows: zero
      ASSERT_EQ(got.at(i)[k], w) << s.name << "[" << k << "]";
    }
  }
  // The same file through its folder, with config.json naming the heads.
  const PretrainedWeights again(dir_ + "/", 0);
  EXPECT_EQ(again.config().seq_len, 16);
  write(R"({"model_type": "gpt2", "n_head": 4, "n_embd": 64, "activation_function": "gelu_new"})");
  EXPECT_EQ(pretrained_config(dir_, 0).n_head, 4);
}

TEST_F(InitFrom, MissingMismatchedOrForeignTensorsAreNamed) {
  tensors_.erase("transformer.h.1.mlp.c_fc.bias");
  std::string e = error_of([&] { (void)PretrainedWeights(write(), 0); });
  EXPECT_NE(e.find("missing tensor transformer.h.1.mlp.c_fc.bias"), std::string::npos) << e;

  SetUp();
  shapes_["transformer.h.0.attn.c_proj.weight"] = Shape{32, 128};
  e = error_of([&] { (void)PretrainedWeights(write(), 0); });
  EXPECT_NE(e.find("transformer.h.0.attn.c_proj.weight has shape [32, 128]"), std::string::npos) << e;

  SetUp();
  add("transformer.h.0.attn.rotary", Shape{4});
  e = error_of([&] { (void)PretrainedWeights(write(), 0); });
  EXPECT_NE(e.find("unexpected tensor transformer.h.0.attn.rotary"), std::string::npos) << e;

  SetUp();
  add("lm_head.weight", Shape{70, 64}, 0.25f);
  e = error_of([&] { (void)PretrainedWeights(write(), 0); });
  EXPECT_NE(e.find("lm_head.weight differs from wte.weight"), std::string::npos) << e;

  SetUp();
  tensors_["transformer.h.1.ln_2.weight"][3] = std::nanf("");
  const PretrainedWeights from(write(), 0);
  std::vector<float> v(64);
  e = error_of([&] { from.read("h.1.ln_2.weight", v.data()); });
  EXPECT_NE(e.find("transformer.h.1.ln_2.weight[3] is not finite"), std::string::npos) << e;
}

TEST_F(InitFrom, ConfigurationsFp8lmDoesNotComputeAreRefused) {
  const std::string path = write();
  std::string e = error_of([&] { (void)PretrainedWeights(path, 17); });
  EXPECT_NE(e.find("model.seq_len = 17"), std::string::npos) << e;
  for (const auto& [json, key] :
       {std::pair{R"({"activation_function": "relu"})", "activation_function"},
        std::pair{R"({"n_layer": 3})", "n_layer = 3 but the model file has 2"},
        std::pair{R"({"n_head": 5})", "n_head = 5 does not divide"},
        std::pair{R"({"layer_norm_epsilon": 1e-6})", "layer_norm_epsilon"},
        std::pair{R"({"model_type": "llama"})", "model_type"},
        std::pair{R"({"scale_attn_by_inverse_layer_idx": true})", "scale_attn_by_inverse_layer_idx"},
        std::pair{R"([1, 2)", "config.json: not valid JSON"}}) {
    write(json);
    e = error_of([&] { (void)PretrainedWeights(path, 0); });
    EXPECT_NE(e.find(key), std::string::npos) << json << ": " << e;
    EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  }
  std::filesystem::remove(dir_ + "/config.json");
  // FP8 values need their scales: not starting weights.
  std::vector<uint8_t> fp8(64, 0x38);
  std::vector<std::pair<std::string, ConstTensorView>> out;
  for (const auto& [name, v] : tensors_)
    out.emplace_back(name, name == "transformer.ln_f.weight"
                               ? ConstTensorView{fp8.data(), DType::kE4M3, Shape{64}}
                               : ConstTensorView{v.data(), DType::kF32, shapes_.at(name)});
  write_safetensors(path, out);
  e = error_of([&] { (void)PretrainedWeights(path, 0); });
  EXPECT_NE(e.find("transformer.ln_f.weight has dtype e4m3"), std::string::npos) << e;
  e = error_of([&] { (void)PretrainedWeights(dir_ + "/nothing.safetensors", 0); });
  EXPECT_NE(e.find("no such file"), std::string::npos) << e;
}

}  // namespace
}  // namespace fp8lm
