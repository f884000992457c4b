#include "train/gpt_state.h"

#include <string>

#include "core/check.h"

namespace fp8lm {

std::unique_ptr<AdamW> make_gpt_optimizer(const GptConfig& cfg, PrecisionLevel level,
                                          const AdamWConfig& acfg, uint64_t seed,
                                          const std::vector<bool>& owned) {
  std::vector<std::string> names;
  std::vector<size_t> numels;
  std::vector<bool> decay;
  for (const ParamSpec& s : param_layout(cfg)) {
    names.push_back(s.name);
    numels.push_back(s.numel());
    decay.push_back(s.shape.rank() == 2);  // matrices and embeddings; not biases or LayerNorm
  }
  Gpt2Init init(cfg, seed);
  return std::make_unique<AdamW>(
      level, acfg, names, numels, decay, [&](size_t i, float* out) { init.next(i, out); }, owned);
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
  for (size_t i = 0; i < model.specs().size(); ++i) g.push_back(model.grad(i));
  return g;
}

}  // namespace fp8lm
