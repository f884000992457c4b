#include "train/inference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "core/check.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "tensor/safetensors.h"
#include "train/checkpoint.h"
#include "train/model_values.h"
#include "train/reference.h"
#include "train/config.h"
#include "train/completion.h"
#include "train/gpt_state.h"

namespace fp8lm {
namespace {

std::string generate(const GptParams& params, const Tokenizer& tok, const std::string& prompt,
                     int tokens, double temperature, uint64_t seed) {
  std::vector<int32_t> ctx = tok.encode(prompt);
  if (ctx.empty()) ctx.push_back(tok.eot());
  CompletionOptions o;
  o.max_new_tokens = tokens;
  o.temperature = temperature;
  o.seed = seed;
  return prompt + tok.decode(complete(params, {ctx}, tok.eot(), o, 1)[0]);
}

}  // namespace

double evaluate(Gpt& model, const DataSource& data, int batches) {
  const size_t B = model.batch(), T = model.seq();
  const Batches& source = data.batches();
  const size_t n = std::min<size_t>(static_cast<size_t>(batches), source.eval_batches());
  if (n == 0) fail(data.path(), ": fewer than one evaluation batch of ", B, "x", T, " tokens");
  std::vector<int32_t> in(B * T), tgt(B * T);
  double sum = 0, targets = 0;
  for (size_t j = 0; j < n; ++j) {
    source.eval_batch(j, in.data(), tgt.data());
    const double mean = model.forward(in.data(), tgt.data());  // over B·T positions
    if (!source.masked()) {
      sum += mean;
      targets += 1;
      continue;
    }
    sum += mean * static_cast<double>(B * T);
    targets += static_cast<double>(std::count_if(tgt.begin(), tgt.end(), [](int32_t t) { return t >= 0; }));
  }
  if (targets == 0) fail(data.path(), ": no target tokens in the evaluation batches");
  return sum / targets;
}

double evaluate_checkpoint(const std::string& checkpoint, const std::string& data, int batches,
                           int batch_size, int seq_len) {
  const std::string dir = resolve_checkpoint(checkpoint);
  const TrainerState t = read_trainer_state(dir);
  const GptConfig& c = t.model;
  const size_t B = static_cast<size_t>(batch_size > 0 ? batch_size : t.batch_size);
  const size_t T = static_cast<size_t>(seq_len > 0 ? seq_len : c.seq_len);
  const DataSource f(data, c.vocab_size, B, T, 0);
  // The model as trained: the level's compute mode on the optimizer's masters, read in
  // place from the file, with the saved delayed-scaling state.
  const PrecisionLevel level = level_from_name(t.level);
  const Fp8Options fp8 = fp8_options(t.recipe, t.amax_window, t.margin, t.mx_grad_format);
  const std::string opt_path = dir + "/optimizer.safetensors";
  const SafetensorsFile masters(opt_path);
  // The masters' format: the level's, or the one the file's metadata records
  // (precision.master); every master tensor must have it.
  DType master_format = level_plan(level).states.master;
  if (const auto it = masters.metadata().find("master"); it != masters.metadata().end()) {
    const std::optional<DType> format = dtype_from_name(it->second);
    if (!format) fail(opt_path, ": metadata master = '", it->second, "' is not a dtype");
    master_format = *format;
  }
  // The masters the optimizer holds: the model's tensors, or (LoRA) the adapters, whose
  // frozen base is read again from its file in the level's formats.
  std::vector<ScaledView> views;
  for (const ParamSpec& s : t.lora.on() ? lora_layout(c, t.lora) : param_layout(c)) {
    const SafetensorsEntry* e = masters.find(s.name + ".master");
    const SafetensorsEntry* si = masters.find(s.name + ".master_scale_inv");
    if (e == nullptr || si == nullptr) fail(opt_path, ": missing ", s.name, ".master");
    const DType dt = e->view.dtype;
    // The levels' masters (f32, f16) and the precision-decoupling ones (bf16; e4m3 for an
    // fp8 model).
    const bool fp8_model = level_plan(level).compute == ComputeMode::kFP8;
    if ((dt != DType::kF32 && dt != DType::kF16 && dt != DType::kBF16 &&
         !(dt == DType::kE4M3 && fp8_model)) ||
        e->view.numel() != s.numel() ||
        reinterpret_cast<uintptr_t>(e->view.data) % dtype_size(dt) != 0)
      fail(opt_path, ": ", s.name, ".master is ", dtype_name(dt), " ", e->view.shape.str(),
           ", the model needs f32, f16, bf16", fp8_model ? " or e4m3" : "", " [", s.numel(),
           "], aligned");
    if (dt != master_format)
      fail(opt_path, ": ", s.name, ".master is ", dtype_name(dt), ", the checkpoint's masters are ",
           dtype_name(master_format), " (level ", t.level, ")");
    if (si->view.dtype != DType::kF32 || si->view.numel() != 1)
      fail(opt_path, ": ", s.name, ".master_scale_inv must be an F32 scalar");
    float scale_inv;
    std::memcpy(&scale_inv, si->view.data, sizeof scale_inv);
    check_state_values(opt_path, s.name + ".master", e->view.data, dt, s.numel(), scale_inv);
    views.push_back({e->view, ScalingMode::kTensor, si->view});  // the file's scale, in place
  }
  Gpt model(c, level_plan(level).compute, B, T, fp8, /*with_grads=*/false, nullptr, nullptr,
            t.lora);
  restore_scaling(t, model.scaling_metas(), dir);
  model.set_lm_head(lm_head_dtype(t.lm_head, level_plan(level).compute));
  if (!t.lora.on()) {
    model.set_weights(std::move(views));
    return evaluate(model, f, batches);
  }
  const FrozenWeights base(PretrainedWeights(lora_base(t, dir), c.seq_len), model.specs(), {},
                           model.mode(), fp8);
  model.set_weights(base.views());
  model.set_adapters(std::move(views));
  return evaluate(model, f, batches);
}

std::unique_ptr<Tokenizer> checkpoint_tokenizer(const std::string& dir, const TrainerState& t) {
  // Checkpoints record where their tokenizer was; older ones a path relative to the run.
  const std::string tok_dir = t.tokenizer_dir.empty() ? default_tokenizer_dir() : t.tokenizer_dir;
  auto tok = make_tokenizer(t.tokenizer, tok_dir);
  if (tok->vocab_size() > t.model.vocab_size)
    fail(dir, "/trainer.json: tokenizer ", t.tokenizer, " has ", tok->vocab_size(),
         " ids, the model's vocabulary ", t.model.vocab_size);
  return tok;
}

std::string sample_checkpoint(const std::string& checkpoint, const std::string& prompt, int tokens,
                              double temperature, uint64_t seed) {
  const std::string dir = resolve_checkpoint(checkpoint);
  const TrainerState t = read_trainer_state(dir);
  GptParams params = load_model_values(dir, t);
  const auto tok = checkpoint_tokenizer(dir, t);
  return generate(params, *tok, prompt, tokens, temperature, seed);
}

}  // namespace fp8lm
