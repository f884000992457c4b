#include "train/gpt_state.h"

#include <string>

#include "core/check.h"
#include "kernels/cast.h"

namespace fp8lm {

std::unique_ptr<AdamW> make_gpt_optimizer(const GptConfig& cfg, PrecisionLevel level,
                                          const AdamWConfig& acfg, uint64_t seed,
                                          const std::vector<bool>& owned, TpShard tp,
                                          PpStage pp, const PretrainedWeights* from) {
  std::vector<std::string> names;
  std::vector<size_t> numels;
  std::vector<bool> decay;
  const std::vector<ParamSpec> specs = param_layout(cfg, tp, pp);
  for (const ParamSpec& s : specs) {
    names.push_back(s.name);
    numels.push_back(s.numel());
    decay.push_back(s.shape.rank() == 2);  // matrices and embeddings; not biases or LayerNorm
  }
  Gpt2Init init(cfg, seed);
  auto values = [&](const std::string& name, float* out) {
    if (from != nullptr) return from->read(name, out);
    init.next_named(name, out);
  };
  std::vector<float> full;
  float full_amax = 0.0f;
  auto initial = [&](size_t i, float* out) {
    const ParamSpec& s = specs[i];
    if (s.split == Split::kNone || tp.size == 1) return values(s.name, out);
    full.resize(static_cast<size_t>(s.full_shape.numel()));
    values(s.name, full.data());
    full_amax = kernels::amax(full.data(), full.size());
    extract_shard(s, tp, full.data(), out, sizeof(float));
  };
  auto scale_amax = [&](size_t i, float own) {
    return specs[i].split == Split::kNone || tp.size == 1 ? own : full_amax;
  };
  return std::make_unique<AdamW>(level, acfg, names, numels, decay, initial, owned, scale_amax);
}

std::unique_ptr<AdamW> make_lora_optimizer(const std::vector<ParamSpec>& adapters,
                                           PrecisionLevel level, const AdamWConfig& acfg,
                                           uint64_t seed) {
  std::vector<std::string> names;
  std::vector<size_t> numels;
  for (const ParamSpec& s : adapters) {
    names.push_back(s.name);
    numels.push_back(s.numel());
  }
  LoraInit init(seed);
  return std::make_unique<AdamW>(level, acfg, names, numels,
                                 std::vector<bool>(adapters.size(), true),
                                 [&](size_t i, float* out) { init.next(adapters[i], out); });
}

std::vector<ScaledView> master_views(const AdamW& opt) {
  std::vector<ScaledView> r;
  for (const AdamW::Param& p : opt.params()) {
    FP8LM_CHECK(p.owned, p.name, ": its master is kept by another rank (O3 computes on replicas)");
    r.push_back(p.master.view());
  }
  return r;
}

std::vector<ScaledView> grad_views(const Gpt& model) {
  std::vector<ScaledView> g;
  for (size_t i = 0; i < model.trainable_specs().size(); ++i) g.push_back(model.grad(i));
  return g;
}

}  // namespace fp8lm
