#include "optim/adamw.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "kernels/cast.h"
#include "tensor/scaling.h"

namespace fp8lm {

namespace {

// The scale for storing values with this amax in t (FP32 and BF16, FP32's range, keep 1;
// zero or non-finite amaxes keep the current scale): power-of-two, just in time, no margin.
float storage_scale(const ScaledTensor& t, float amax) {
  if (t.data.dtype() == DType::kF32 || t.data.dtype() == DType::kBF16) return 1.0f;
  return compute_scale(amax, format_max(t.data.dtype()), /*margin=*/0, /*pow2=*/true)
      .value_or(t.meta.scale);
}

// Elements [i0, i0 + len) of a flat per-tensor view (its scale reference unchanged).
template <bool kMutable>
BasicScaledView<kMutable> slice(BasicScaledView<kMutable> v, size_t i0, size_t len) {
  using Byte = std::conditional_t<kMutable, uint8_t, const uint8_t>;
  v.data.data = static_cast<Byte*>(v.data.data) + i0 * dtype_size(v.data.dtype);
  v.data.shape = Shape{static_cast<int64_t>(len)};
  return v;
}

// A telemetry step's update: chunk by chunk, each narrow new state is compared with its
// FP32 reference computed from the old states as kernels/adamw.cc computes it (the
// reference the probe measures storage against), then the chunk is updated. Statistics are
// merged over the chunks, so no full-size FP32 copy of a state exists.
void apply_probed(AdamW::Param& p, const ScaledView& grad, const kernels::AdamWArgs& a,
                  const kernels::AdamWScales& s, QuantProbe& probe) {
  constexpr size_t kChunk = size_t{1} << 15;
  const size_t n = p.numel;
  std::vector<float> old[4], ref[3];  // master, m1, m2, gradient; new master, m1, m2
  for (auto& v : old) v.resize(std::min(kChunk, n));
  for (auto& v : ref) v.resize(std::min(kChunk, n));
  const ScaledTensor* states[] = {&p.master, &p.m1, &p.m2};
  const float new_scales[] = {s.master, s.m1, s.m2};
  QuantStats stats[3];
  for (size_t i0 = 0; i0 < n; i0 += kChunk) {
    const size_t len = std::min(kChunk, n - i0);
    for (int k = 0; k < 3; ++k)
      kernels::dequantize(old[k].data(), slice(states[k]->view(), i0, len));
    kernels::dequantize(old[3].data(), slice(grad, i0, len));
    for (size_t i = 0; i < len; ++i) {
      const float gi = old[3][i] * a.grad_mul;
      const float m = a.beta1 * old[1][i] + (1.0f - a.beta1) * gi;
      const float v = a.beta2 * old[2][i] + (1.0f - a.beta2) * gi * gi;
      const float step = a.lr * (m / a.bias_corr1) / (std::sqrt(v / a.bias_corr2) + a.eps);
      ref[0][i] = old[0][i] * (1.0f - a.decay) - step;
      ref[1][i] = m;
      ref[2][i] = v;
    }
    kernels::adamw_apply(slice(p.master.mut_view(), i0, len), slice(p.m1.mut_view(), i0, len),
                         slice(p.m2.mut_view(), i0, len), slice(grad, i0, len), a, s);
    for (int k = 0; k < 3; ++k) {
      if (states[k]->data.dtype() == DType::kF32) continue;
      // The chunk as stored, read through the new scale (set on the tensor after the loop).
      float scale_inv = 1.0f / new_scales[k];
      ScaledView q = slice(states[k]->view(), i0, len);
      q.scales.data = &scale_inv;
      const QuantStats chunk = quant_stats(ref[k].data(), q);
      stats[k] = i0 == 0 ? chunk : merge(stats[k], chunk);
    }
  }
  const char* roles[] = {"master", "m1", "m2"};
  for (int k = 0; k < 3; ++k)
    if (states[k]->data.dtype() != DType::kF32)
      probe.record_stats(p.name, roles[k], states[k]->data.dtype(), states[k]->view().mode,
                         stats[k]);
}

void set_scale(ScaledTensor& t, float s) {
  t.meta.scale = s;
  t.meta.scale_inv = 1.0f / s;
}

ScaledTensor make_state(DType t, size_t n, MemCategory c) {
  ScalingRecipe r;
  r.format = t;
  r.timing = ScalingTiming::kJustInTime;
  r.window = 1;
  ScaledTensor s(Shape{static_cast<int64_t>(n)}, r, c);
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
             const InitFn& initial, const std::vector<bool>& owned,
             const ScaleAmaxFn& scale_amax)
    : level_(level), cfg_(cfg) {
  FP8LM_CHECK(owned.empty() || owned.size() == names.size(), "AdamW: ", owned.size(),
              " ownership flags for ", names.size(), " parameters");
  FP8LM_CHECK(names.size() == numels.size() && numels.size() == decay.size(),
              "AdamW: one name, size and decay flag per parameter");
  states_ = level_plan(level).states;
  if (cfg.states) {
    const StateFormats& o = *cfg.states;
    // The level's gradient format, or FP32 (the kernels take both for each state layout).
    if (!kernels::adamw_supported(o.master, o.m1, o.m2, states_.grad))
      fail("optimizer states master ", dtype_name(o.master), ", m1 ", dtype_name(o.m1), ", m2 ",
           dtype_name(o.m2), " with ", dtype_name(states_.grad),
           " gradients are not supported");
    states_.master = o.master;
    states_.m1 = o.m1;
    states_.m2 = o.m2;
  }
  const StateFormats f = states_;
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
      const float own = kernels::amax(values.data(), numels[i]);
      set_scale(p.master, storage_scale(p.master, scale_amax ? scale_amax(i, own) : own));
      kernels::quantize(p.master.data.data(), f.master, values.data(), numels[i],
                        p.master.meta.scale);
    }
    params_.push_back(std::move(p));
  }
}

void AdamW::master_values(size_t i, float* out) const {
  const Param& p = params_[i];
  FP8LM_CHECK(p.owned, p.name, ": its master is kept by another rank");
  kernels::dequantize(out, p.master.view());
}

StepResult AdamW::step(const std::vector<ScaledView>& grads, float lr, float grad_mul,
                       float clip) {
  FP8LM_CHECK(grads.size() == params_.size(), "AdamW: ", grads.size(), " gradients for ",
              params_.size(), " parameters");
  std::vector<double> sq_t(grads.size(), 0.0);
  for (size_t i = 0; i < grads.size(); ++i)
    if (params_[i].owned)
      sq_t[i] = kernels::sum_squares(grads[i]);
  if (reduce_.squares) reduce_.squares(sq_t.data(), sq_t.size());
  double sq = 0;
  for (double v : sq_t) sq += v;
  if (reduce_.norm) reduce_.norm(&sq, 1);
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
    const kernels::AdamWScales m =
        kernels::adamw_amax(p.master.view(), p.m1.view(), p.m2.view(), grads[i], a);
    if (!std::isfinite(m.master) || !std::isfinite(m.m1) || !std::isfinite(m.m2)) bad = 1;
    amaxes[i] = m;
  }
  if (reduce_.flags) reduce_.flags(&bad, 1);  // sharded: every rank skips together
  if (bad != 0) {
    --t_;
    ++skipped_;
    return {norm, true};
  }
  if (reduce_.amax) {
    std::vector<float> flat;
    for (const kernels::AdamWScales& m : amaxes) flat.insert(flat.end(), {m.master, m.m1, m.m2});
    reduce_.amax(flat.data(), flat.size());
    for (size_t i = 0; i < amaxes.size(); ++i) amaxes[i] = {flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]};
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    if (!p.owned) continue;
    a.decay = p.decay ? lr * cfg_.weight_decay : 0.0f;
    const kernels::AdamWScales& amax = amaxes[i];
    const kernels::AdamWScales s{storage_scale(p.master, amax.master),
                                 storage_scale(p.m1, amax.m1), storage_scale(p.m2, amax.m2)};
    // Pass 2 reads the old states through their old scales; the new ones are set after.
    if (probe_ != nullptr && probe_->wants())
      apply_probed(p, grads[i], a, s, *probe_);
    else
      kernels::adamw_apply(p.master.mut_view(), p.m1.mut_view(), p.m2.mut_view(), grads[i], a, s);
    set_scale(p.master, s.master);
    set_scale(p.m1, s.m1);
    set_scale(p.m2, s.m2);
  }
  return {norm, false};
}

}  // namespace fp8lm
