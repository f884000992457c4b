#include "train/zero_replica.h"

#include <cstring>

#include "core/check.h"
#include "distributed/zero.h"
#include "kernels/cast.h"
#include "tensor/scaling.h"

namespace fp8lm {

namespace {

std::vector<int64_t> state_bytes(const std::vector<ParamSpec>& specs) {
  const StateFormats f = level_plan(PrecisionLevel::kO3).states;
  const size_t per_elem = dtype_size(f.master) + dtype_size(f.m1) + dtype_size(f.m2);
  std::vector<int64_t> bytes;
  for (const ParamSpec& s : specs) bytes.push_back(static_cast<int64_t>(s.numel() * per_elem));
  return bytes;
}

}  // namespace

std::vector<int> zero_owners(const std::vector<ParamSpec>& specs, int dp) {
  return dist::placement(state_bytes(specs), dp).owner;
}

ZeroReplica::ZeroReplica(const GptConfig& cfg, int world_size, int rank, ScalingMode linear_mode,
                         TpShard tp, dist::Group group, AmaxShare share, PpStage pp)
    : specs_(param_layout(cfg, tp, pp)), rank_(rank), group_(group), share_(std::move(share)) {
  const dist::Placement p = dist::placement(state_bytes(specs_), world_size);
  owner_ = p.owner;
  rank_bytes_ = p.rank_bytes;
  // E4M3 casts of Linear weights are just in time, as the FP8 GEMM's weight cast; FP16
  // copies take the master's scale.
  const ScalingRecipe e4m3{DType::kE4M3, ScalingTiming::kJustInTime};
  const ScalingRecipe f16{DType::kF16, ScalingTiming::kJustInTime};
  replica_.reserve(specs_.size());  // views point into the elements: no reallocation
  for (const ParamSpec& s : specs_) {
    const auto c = MemCategory::kWeights;
    if (!s.linear_weight || linear_mode == ScalingMode::kNone)
      replica_.emplace_back(s.shape, f16, c);
    else if (linear_mode == ScalingMode::kTensor)
      replica_.emplace_back(s.shape, e4m3, c);
    else
      replica_.emplace_back(s.shape, DType::kE4M3, linear_mode, c);
  }
}

std::vector<bool> ZeroReplica::owned() const {
  std::vector<bool> o(owner_.size());
  for (size_t i = 0; i < o.size(); ++i) o[i] = owner_[i] == rank_;
  return o;
}

void ZeroReplica::refresh(const AdamW& opt) {
  std::vector<float> values;
  for (size_t i = 0; i < specs_.size(); ++i) {
    if (owner_[i] != rank_) continue;
    const ScaledTensor& m = opt.params()[i].master;
    ScaledTensor& r = replica_[i];
    FP8LM_CHECK(m.data.dtype() == DType::kF16, "O3 masters are FP16");
    if (r.data.dtype() == DType::kF16) {
      std::memcpy(r.data.data(), m.data.data(), m.data.bytes());
      r.meta.scale = m.meta.scale;
      r.meta.scale_inv = m.meta.scale_inv;
      continue;
    }
    // The FP8 GEMM's weight cast, from the master's exact values: per tensor, a just-in-time
    // scale from the master's amax (kept when the amax is zero or not finite, as ScalingMeta
    // does), saturating E4M3; per block, each block's scale from its own amax.
    const size_t n = specs_[i].numel();
    values.resize(n);
    kernels::dequantize(values.data(), m.view());
    if (r.mode == ScalingMode::kTensor) {
      float amax = kernels::amax(m.data.data(), DType::kF16, n, m.meta.scale_inv);
      if (share_) amax = share_(amax);  // a tensor-parallel shard: the whole tensor's
      r.meta.set_scale_from_amax(amax);
      kernels::quantize(r.data.data(), DType::kE4M3, values.data(), n, r.meta.scale, true);
    } else {
      quantize(r, values.data());
    }
  }
  gather();
}

void ZeroReplica::gather() {
  std::vector<MutableScaledView> views;
  for (ScaledTensor& r : replica_) views.push_back(r.mut_view());
  dist::gather_from_owners(views, owner_, dist::kDefaultBucketBytes, group_);
}

std::vector<ScaledView> ZeroReplica::views() const {
  std::vector<ScaledView> v;
  for (const ScaledTensor& r : replica_) v.push_back(r.view());
  return v;
}

}  // namespace fp8lm
