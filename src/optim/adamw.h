// Precision-decoupled AdamW (docs/numerics.md, precision levels and AdamW): master weights, first and second moments stored
// per tensor in the precision level's formats with power-of-two just-in-time scales,
// updated in FP32 in two passes (amax, then cast) without full-size FP32 temporaries.
//   fp32, bf16: master f32, m1 f32, m2 f32                 (16 B/param with f32 gradients)
//   O1:         master f16+scale, m1 f32, m2 f32            (11 B/param with e4m3 gradients)
//   O2:         master f16+scale, m1 e4m3+scale, m2 f16+scale (6 B/param with e4m3 gradients)
//   O3:         O2's formats, each tensor's states kept only by the rank that owns it (FP8
//               ZeRO, docs/numerics.md): the optimizer is built with the owned mask.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/adamw.h"
#include "numerics/dtype.h"
#include "tensor/precision_plan.h"
#include "tensor/quant_stats.h"
#include "tensor/scaling.h"
#include "tensor/tensor.h"

namespace fp8lm {


struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  // Storage of master, m1 and m2 other than the level's (precision.master/m1/m2: the
  // precision-decoupling ablations); `grad` is ignored (the model decides it). Throws Error
  // at construction for a combination the kernels do not take.
  std::optional<StateFormats> states;
};

struct StepResult {
  double grad_norm;  // global L2 norm of the (dequantized) gradients, before clipping
  bool skipped;      // non-finite gradients or update: nothing was updated
};

class AdamW {
 public:
  struct Param {
    std::string name;
    size_t numel;
    bool decay;  // weight decay applies (matrices and embeddings, not biases or LayerNorm)
    bool owned;  // this rank keeps and updates the states (always, except at O3)
    // Per-tensor scaled states (FP32 ones keep scale 1); their views are live: a model that
    // reads master.view() sees every update without being told.
    ScaledTensor master, m1, m2;
  };

  // `initial[i]` holds numel(i) FP32 starting values of parameter i.
  AdamW(PrecisionLevel level, AdamWConfig cfg, const std::vector<std::string>& names,
        const std::vector<size_t>& numels, const std::vector<bool>& decay,
        const std::vector<const float*>& initial);
  // The same with the starting values produced per parameter, in order: initial(i, out)
  // writes numel(i) floats (only one tensor's FP32 values exist at a time).
  // `owned` (empty: all) says which parameters this rank keeps; the others have no states
  // and are skipped by step(); their initial values are still produced, in order.
  // `scale_amax` (optional) gives the amax a narrow master's first scale is chosen from,
  // given parameter i's values' own amax: a tensor-parallel shard takes its whole tensor's,
  // so the shards of one tensor share one scale from the start (Reductions::amax keeps it so).
  using InitFn = std::function<void(size_t i, float* out)>;
  using ScaleAmaxFn = std::function<float(size_t i, float own_amax)>;
  AdamW(PrecisionLevel level, AdamWConfig cfg, const std::vector<std::string>& names,
        const std::vector<size_t>& numels, const std::vector<bool>& decay, const InitFn& initial,
        const std::vector<bool>& owned = {}, const ScaleAmaxFn& scale_amax = {});

  // How an optimizer that holds part of the model agrees with the ranks holding the rest
  // (default: it holds all of it, nothing to reduce).
  using SumFn = std::function<void(double* values, size_t n)>;
  using MaxFn = std::function<void(float* values, size_t n)>;
  struct Reductions {
    // Per-tensor squared gradient norms (one per parameter) into the global ones: the sums
    // over the ranks holding distinct parts (O3's owners; tensor-parallel shards), each
    // part counted once, so every rank computes the norm of an unsharded run.
    SumFn squares;
    // The squared norm of this rank's tensors (after `squares`) into the whole model's:
    // pipeline stages hold different tensors, and add their sums.
    SumFn norm;
    // One flag (a rank's update would make a state non-finite) summed over every rank, so
    // all skip the step together.
    SumFn flags;
    // The new states' amax (master, m1, m2 of each parameter: 3 per parameter) → the max over
    // the ranks holding shards of the same tensor, so the shards share one scale (and a
    // checkpoint joins them without requantizing).
    MaxFn amax;
  };
  void set_reductions(Reductions r) { reduce_ = std::move(r); }

  PrecisionLevel level() const { return level_; }
  // The storage of master, m1, m2 (the level's unless AdamWConfig::states says otherwise).
  const StateFormats& states() const { return states_; }
  // Fixed after construction (views of the states stay valid for the optimizer's life).
  const std::vector<Param>& params() const { return params_; }
  std::vector<Param>& params() { return params_; }
  int64_t step_count() const { return t_; }
  int64_t skipped_steps() const { return skipped_; }

  // One update with learning rate lr. Gradients are scaled by grad_mul (e.g. 1/accumulation)
  // and then clipped to global norm `clip` (0: no clipping). A non-finite norm, or an update
  // that would make any state non-finite, skips the step (weights and moments unchanged,
  // the step counter does not advance; skipped_steps() counts it).
  // Gradients are per-tensor views (f32, bf16 or e4m3), one per parameter.
  StepResult step(const std::vector<ScaledView>& grads, float lr, float grad_mul = 1.0f,
                  float clip = 0.0f);
  // Restores the counters of a checkpointed optimizer (states are restored in params()).
  void restore_counters(int64_t steps, int64_t skipped) {
    t_ = steps;
    skipped_ = skipped;
  }
  // FP32 values of parameter i's master weights.
  void master_values(size_t i, float* out) const;

  // While `probe` is armed, each update also reports how storing the new master, m1 and m2
  // in their narrow formats changed them (roles "master", "m1", "m2"; FP32 states are not
  // reported), against the update computed in FP32 from the same old states and gradient.
  void set_probe(QuantProbe* probe) { probe_ = probe; }

 private:
  PrecisionLevel level_;
  AdamWConfig cfg_;
  StateFormats states_;
  std::vector<Param> params_;
  int64_t t_ = 0;
  int64_t skipped_ = 0;
  Reductions reduce_;
  QuantProbe* probe_ = nullptr;
};

}  // namespace fp8lm
