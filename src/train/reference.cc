#include "train/reference.h"

#include "kernels/cast.h"
#include "tensor/precision_plan.h"
#include "tensor/scaling.h"

namespace fp8lm {

namespace {

// Per-tensor E4M3 where the recipe's Linear layers take such weights (the per-tensor
// recipes); the fine-grained recipes' weights stay BF16 (their blocks are made per GEMM).
DType frozen_format(const ParamSpec& s, ComputeMode mode, const Fp8Options& fp8) {
  if (mode == ComputeMode::kF32) return DType::kF32;
  const bool e4m3 = mode == ComputeMode::kFP8 && s.linear_weight &&
                    fp8.recipe->weight_replica == ScalingMode::kTensor;
  return e4m3 ? DType::kE4M3 : DType::kBF16;
}

}  // namespace

FrozenWeights::FrozenWeights(const PretrainedWeights& from, const std::vector<ParamSpec>& specs,
                             TpShard shard, ComputeMode mode, const Fp8Options& fp8) {
  scales_.assign(specs.size(), 1.0f);  // sized once: views point into it
  std::vector<float> full, part;
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    full.resize(static_cast<size_t>(s.full_shape.numel()));
    from.read(s.name, full.data());
    const float* values = full.data();  // this rank's part of the tensor
    if (shard.size > 1 && s.split != Split::kNone) {
      part.resize(s.numel());
      extract_shard(s, shard, full.data(), part.data(), sizeof(float));
      values = part.data();
    }
    const DType f = frozen_format(s, mode, fp8);
    store_.emplace_back(f, s.shape, MemCategory::kFrozen);
    bytes_ += store_.back().bytes();
    if (f == DType::kE4M3) {
      // One scale for the whole tensor (every shard of it): from the amax of all its values.
      const float amax = kernels::amax(full.data(), full.size());
      const float scale = compute_scale(amax, format_max(f), 0, true).value_or(1.0f);
      kernels::quantize(store_.back().data(), f, values, s.numel(), scale);
      scales_[i] = 1.0f / scale;
      views_.push_back(tensor_view(store_.back().data(), f, s.shape, &scales_[i]));
    } else if (f == DType::kF32) {
      std::copy(values, values + s.numel(), store_.back().as<float>());
      views_.push_back(tensor_view(store_.back().data(), f, s.shape, nullptr));
    } else {
      kernels::quantize(store_.back().data(), f, values, s.numel(), 1.0f);
      views_.push_back(tensor_view(store_.back().data(), f, s.shape, nullptr));
    }
  }
}

ReferenceModel::ReferenceModel(const FrozenWeights& weights, const Gpt& policy,
                               const Fp8Options& fp8, TpComm* tp)
    : model_(policy.config(), policy.mode(), policy.batch(), policy.seq(), fp8, false, tp) {
  model_.set_weights(weights.views());
  model_.set_lm_head(policy.lm_head());
}

const float* ReferenceModel::token_losses(const int32_t* tokens, const int32_t* targets) {
  model_.forward(tokens, targets);
  return model_.token_losses();
}

}  // namespace fp8lm
