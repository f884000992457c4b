#include "optim/adamw.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "kernels/cast.h"
#include "tensor/scaling.h"

namespace fp8lm {

namespace {

// Scale for storing values with this amax in `t` (1 for FP32; the previous scale when the
// amax is zero or not finite).
float storage_scale(DType t, float amax, float previous_inv) {
  if (t == DType::kF32) return 1.0f;
  return compute_scale(amax, format_max(t), /*margin=*/0, /*pow2=*/true)
      .value_or(1.0f / previous_inv);
}

StoredTensor make_state(DType t, size_t n, MemCategory c) {
  StoredTensor s{Tensor(t, {static_cast<int64_t>(n)}, c), 1.0f};
  std::memset(s.data.data(), 0, s.data.bytes());
  return s;
}

}  // namespace

AdamW::AdamW(PrecisionLevel level, AdamWConfig cfg, const std::vector<std::string>& names,
             const std::vector<size_t>& numels, const std::vector<bool>& decay,
             const std::vector<const float*>& initial)
    : AdamW(level, cfg, names, numels, decay, [&](size_t i, float* out) {
        FP8LM_CHECK(initial.size() == names.size(), "AdamW: one initial value per parameter");
        std::memcpy(out, initial[i], numels[i] * sizeof(float));
      }) {}

AdamW::AdamW(PrecisionLevel level, AdamWConfig cfg, const std::vector<std::string>& names,
             const std::vector<size_t>& numels, const std::vector<bool>& decay,
             const InitFn& initial, const std::vector<bool>& owned)
    : level_(level), cfg_(cfg) {
  FP8LM_CHECK(owned.empty() || owned.size() == names.size(), "AdamW: ", owned.size(),
              " ownership flags for ", names.size(), " parameters");
  FP8LM_CHECK(names.size() == numels.size() && numels.size() == decay.size(),
              "AdamW: one name, size and decay flag per parameter");
  const StateFormats f = level_plan(level).states;
  std::vector<float> values;
  for (size_t i = 0; i < names.size(); ++i) {
    const bool mine = owned.empty() || owned[i];
    Param p{names[i], numels[i], decay[i], mine, {}, {}, {}};
    if (!mine) {  // keep the initial values' stream in step for the next tensors
      values.resize(numels[i]);
      initial(i, values.data());
      params_.push_back(std::move(p));
      continue;
    }
    p.master = make_state(f.master, numels[i], MemCategory::kMaster);
    p.m1 = make_state(f.m1, numels[i], MemCategory::kOptimM1);
    p.m2 = make_state(f.m2, numels[i], MemCategory::kOptimM2);
    if (f.master == DType::kF32) {
      initial(i, p.master.data.as<float>());
    } else {
      // FP32 values of one tensor at a time; just-in-time scale from their amax.
      values.resize(numels[i]);
      initial(i, values.data());
      const float s = storage_scale(f.master, kernels::amax(values.data(), numels[i]), 1.0f);
      kernels::quantize(p.master.data.data(), f.master, values.data(), numels[i], s);
      p.master.scale_inv = 1.0f / s;
    }
    params_.push_back(std::move(p));
  }
}

void AdamW::master_values(size_t i, float* out) const {
  const Param& p = params_[i];
  FP8LM_CHECK(p.owned, p.name, ": its master is kept by another rank");
  kernels::dequantize(out, p.master.data.data(), p.master.data.dtype(), p.numel,
                      p.master.scale_inv);
}

StepResult AdamW::step(const std::vector<GradRef>& grads, float lr, float grad_mul, float clip) {
  FP8LM_CHECK(grads.size() == params_.size(), "AdamW: ", grads.size(), " gradients for ",
              params_.size(), " parameters");
  std::vector<double> sq_t(grads.size(), 0.0);
  for (size_t i = 0; i < grads.size(); ++i)
    if (params_[i].owned)
      sq_t[i] =
          kernels::sum_squares(grads[i].data, grads[i].dtype, params_[i].numel, grads[i].scale_inv);
  if (reduce_sq_) reduce_sq_(sq_t.data(), sq_t.size());
  double sq = 0;
  for (double v : sq_t) sq += v;
  const double norm = std::sqrt(sq) * grad_mul;
  if (!std::isfinite(norm)) {
    ++skipped_;
    return {norm, true};
  }
  const float clip_mul = clip > 0.0f && norm > clip ? static_cast<float>(clip / norm) : 1.0f;
  ++t_;
  kernels::AdamWArgs a{};
  a.lr = lr;
  a.beta1 = cfg_.beta1;
  a.beta2 = cfg_.beta2;
  a.eps = cfg_.eps;
  a.bias_corr1 = 1.0f - static_cast<float>(std::pow(cfg_.beta1, static_cast<double>(t_)));
  a.bias_corr2 = 1.0f - static_cast<float>(std::pow(cfg_.beta2, static_cast<double>(t_)));
  a.grad_mul = grad_mul * clip_mul;
  // Pass 1 over every tensor first: an update that would make any state non-finite (an
  // overflow the gradient check cannot see) is refused before anything is written.
  std::vector<kernels::AdamWScales> amaxes(params_.size(), {0.0f, 0.0f, 0.0f});
  double bad = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    if (!p.owned) continue;
    a.decay = p.decay ? lr * cfg_.weight_decay : 0.0f;
    const kernels::AdamWScales m = kernels::adamw_amax(p.master.ref(), p.m1.ref(), p.m2.ref(),
                                                       grads[i].data, grads[i].dtype,
                                                       grads[i].scale_inv, p.numel, a);
    if (!std::isfinite(m.master) || !std::isfinite(m.m1) || !std::isfinite(m.m2)) bad = 1;
    amaxes[i] = m;
  }
  if (reduce_sq_) reduce_sq_(&bad, 1);  // sharded: every rank skips together
  if (bad != 0) {
    --t_;
    ++skipped_;
    return {norm, true};
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    if (!p.owned) continue;
    a.decay = p.decay ? lr * cfg_.weight_decay : 0.0f;
    const auto master = p.master.ref(), m1 = p.m1.ref(), m2 = p.m2.ref();
    const kernels::AdamWScales& amax = amaxes[i];
    const kernels::AdamWScales s{storage_scale(master.dtype, amax.master, master.scale_inv),
                                 storage_scale(m1.dtype, amax.m1, m1.scale_inv),
                                 storage_scale(m2.dtype, amax.m2, m2.scale_inv)};
    kernels::adamw_apply(master, m1, m2, grads[i].data, grads[i].dtype, grads[i].scale_inv, p.numel,
                         a, s);
    p.master.scale_inv = 1.0f / s.master;
    p.m1.scale_inv = 1.0f / s.m1;
    p.m2.scale_inv = 1.0f / s.m2;
  }
  return {norm, false};
}

}  // namespace fp8lm
