#include "train/model_values.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/check.h"
#include "core/file.h"
#include "model/lora.h"
#include "tensor/safetensors.h"
#include "train/init_from.h"

namespace fp8lm {

namespace fs = std::filesystem;

std::string fingerprint_hex(const std::string& path) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(file_fingerprint(path)));
  return buf;
}

std::string lora_base(const TrainerState& t, const std::string& dir) {
  FP8LM_CHECK(t.lora.on(), "lora_base: not a LoRA checkpoint");
  if (!fs::is_regular_file(t.base))
    fail(dir, "/trainer.json: lora.base = ", t.base, ": the base model of these adapters is gone");
  if (fingerprint_hex(t.base) != t.base_fingerprint)
    fail(dir, "/trainer.json: lora.base = ", t.base, " is not the file the adapters were trained "
         "on (fingerprint ", fingerprint_hex(t.base), ", recorded ", t.base_fingerprint, ")");
  return t.base;
}

GptParams load_model_values(const std::string& dir, const TrainerState& t) {
  GptParams params(t.model);
  if (!t.lora.on()) {
    params.load(dir + "/model.safetensors");
    return params;
  }
  const PretrainedWeights base(lora_base(t, dir), t.model.seq_len);
  for (size_t i = 0; i < params.specs().size(); ++i) base.read(params.specs()[i].name, params.at(i));
  const std::string path = dir + "/adapters.safetensors";
  const SafetensorsFile f(path);
  const std::vector<ParamSpec> adapters = lora_layout(t.model, t.lora);
  if (f.tensors().size() != adapters.size())
    fail(path, ": ", f.tensors().size(), " tensors, the adapters of trainer.json are ",
         adapters.size());
  std::vector<std::vector<float>> v(adapters.size());
  for (size_t i = 0; i < adapters.size(); ++i) {
    const SafetensorsEntry* e = f.find(adapters[i].name);
    if (e == nullptr) fail(path, ": missing tensor ", adapters[i].name);
    if (e->view.dtype != DType::kF32 || !(e->view.shape == adapters[i].shape))
      fail(path, ": ", adapters[i].name, " is ", dtype_name(e->view.dtype), " ",
           e->view.shape.str(), ", need f32 ", adapters[i].shape.str());
    check_state_values(path, adapters[i].name, e->view.data, DType::kF32, e->view.numel(), 1.0f);
    v[i].resize(adapters[i].numel());
    std::memcpy(v[i].data(), e->view.data, e->view.bytes());
  }
  // W += s·A·B, summed in FP64 per element.
  const double s = t.lora.scale();
  for (size_t p = 0; p < adapters.size(); p += 2) {
    const std::string& a = adapters[p].name;
    const std::string weight = a.substr(0, a.size() - 6) + "weight";  // "…lora_a" → "…weight"
    size_t w = 0;
    while (params.specs()[w].name != weight) ++w;
    const size_t in = static_cast<size_t>(adapters[p].shape[0]),
                 r = static_cast<size_t>(adapters[p].shape[1]),
                 out = static_cast<size_t>(adapters[p + 1].shape[1]);
    float* W = params.at(w);
    for (size_t i = 0; i < in; ++i)
      for (size_t j = 0; j < out; ++j) {
        double d = 0;
        for (size_t k = 0; k < r; ++k) d += static_cast<double>(v[p][i * r + k]) * v[p + 1][k * out + j];
        W[i * out + j] = static_cast<float>(W[i * out + j] + s * d);
      }
  }
  return params;
}

void export_model(const std::string& checkpoint, const std::string& out) {
  const std::string dir = resolve_checkpoint(checkpoint);
  const TrainerState t = read_trainer_state(dir);
  const GptParams params = load_model_values(dir, t);
  const GptConfig& c = t.model;
  fs::create_directories(out);
  params.save(out + "/model.safetensors");
  const nlohmann::json config = {{"model_type", "gpt2"},
                                 {"architectures", {"GPT2LMHeadModel"}},
                                 {"n_layer", c.n_layer},
                                 {"n_head", c.n_head},
                                 {"n_embd", c.n_embd},
                                 {"n_positions", c.seq_len},
                                 {"n_ctx", c.seq_len},
                                 {"vocab_size", c.vocab_size},
                                 {"activation_function", "gelu_new"},
                                 {"layer_norm_epsilon", 1e-5},
                                 {"scale_attn_weights", true},
                                 {"tie_word_embeddings", true}};
  write_text_atomic(out + "/config.json", config.dump(2) + "\n");
}

}  // namespace fp8lm
