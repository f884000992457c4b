// Data-parallel gradient averaging for the trainer (docs/numerics.md): after the local backward
// passes, every rank's gradients are replaced by the mean over the ranks, in the level's
// own format on the wire — fp32 as FP32, bf16 as BF16, O1/O2 as E4M3 through the FP8
// all-reduce with automatic (or fixed) scaling. O3 reduces each tensor's E4M3 gradient to
// its owner only. One process: nothing happens.
#pragma once

#include <string>
#include <vector>

#include "distributed/fp8_reduce.h"
#include "model/gpt.h"
#include "optim/adamw.h"

namespace fp8lm {

class GradSync {
 public:
  // `owner` (O3): the rank of `group` that owns each tensor. Gradients are averaged over
  // `group` (the data-parallel group; default the world).
  GradSync(PrecisionLevel level, const std::string& grad_scaling, std::vector<int> owner = {},
           dist::Group group = {});
  // `measure`: telemetry of the gradient on the wire this step (role "wire",
  // docs/telemetry.md) — every rank must pass the same value: an FP8 average is also
  // compared with the exact mean of the gradients that went in (an extra FP32 all-reduce of
  // those values, counted as "telemetry_f32" traffic), recorded into the probe where it is
  // armed (rank 0; at O3 the tensors rank 0 owns).
  void average(Gpt& model, bool measure = false);
  // The same on gradient buffers in the level's format (f32, or e4m3 scaled per tensor),
  // replaced in place; `names` (one per buffer) label the telemetry.
  void average(const std::vector<MutableScaledView>& grads,
               const std::vector<std::string>& names = {}, bool measure = false);
  void set_probe(QuantProbe* probe) { probe_ = probe; }
  // The FP8 all-reduce's auto-scaling multiplier μ (checkpoint state).
  float mu() const { return fp8_.mu(); }
  void set_mu(float mu) { fp8_.set_mu(mu); }

 private:
  PrecisionLevel level_;
  dist::Group group_;
  dist::Fp8GradReducer fp8_;
  std::vector<int> owner_;
  QuantProbe* probe_ = nullptr;
};

}  // namespace fp8lm
