#include "train/gpt_state.h"

#include <string>

#include "core/check.h"

namespace fp8lm {

ComputeMode compute_mode(PrecisionLevel level) {
  switch (level) {
    case PrecisionLevel::kFP32:
      return ComputeMode::kF32;
    case PrecisionLevel::kBF16:
      return ComputeMode::kBF16;
    default:
      return ComputeMode::kFP8;
  }
}

Fp8Options fp8_options(const std::string& recipe, int amax_window, int margin,
                       const std::string& mx_grad_format) {
  Fp8Options o;
  o.timing = recipe == "jit" ? ScalingTiming::kJustInTime : ScalingTiming::kDelayed;
  o.fine = recipe == "block"   ? FineScaling::kBlock
           : recipe == "mxfp8" ? FineScaling::kMx
                               : FineScaling::kNone;
  o.mx_grad = mx_grad_format == "e5m2" ? DType::kE5M2 : DType::kE4M3;
  o.window = amax_window;
  o.margin = margin;
  return o;
}

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

std::vector<ParamRef> master_refs(const AdamW& opt) {
  std::vector<ParamRef> r;
  for (const AdamW::Param& p : opt.params()) {
    FP8LM_CHECK(p.owned, p.name, ": its master is kept by another rank (O3 computes on replicas)");
    r.push_back({p.master.data.data(), p.master.data.dtype(), p.master.scale_inv});
  }
  return r;
}

std::vector<GradRef> grad_refs(const Gpt& model) {
  std::vector<GradRef> g;
  for (size_t i = 0; i < model.specs().size(); ++i) {
    const Gpt::GradView v = model.grad(i);
    g.push_back({v.data, v.dtype, v.scale_inv});
  }
  return g;
}

}  // namespace fp8lm
