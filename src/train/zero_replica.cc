#include "train/zero_replica.h"

#include <cstring>

#include "core/check.h"
#include "distributed/zero.h"
#include "kernels/cast.h"
#include "tensor/scaling.h"

namespace fp8lm {

ZeroReplica::ZeroReplica(const GptConfig& cfg, int world_size, int rank, bool fp8_weights)
    : specs_(param_layout(cfg)), rank_(rank), fp8_weights_(fp8_weights) {
  const StateFormats f = level_plan(PrecisionLevel::kO3).states;
  const size_t per_elem = dtype_size(f.master) + dtype_size(f.m1) + dtype_size(f.m2);
  std::vector<int64_t> bytes;
  for (const ParamSpec& s : specs_) bytes.push_back(static_cast<int64_t>(s.numel() * per_elem));
  const dist::Placement p = dist::placement(bytes, world_size);
  owner_ = p.owner;
  rank_bytes_ = p.rank_bytes;
  for (const ParamSpec& s : specs_)
    data_.emplace_back(s.linear_weight && fp8_weights ? DType::kE4M3 : DType::kF16, s.shape,
                       MemCategory::kWeights);
  scale_inv_.assign(specs_.size(), 1.0f);
  w8_scale_.assign(specs_.size(), 1.0f);
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
    const StoredTensor& m = opt.params()[i].master;
    FP8LM_CHECK(m.data.dtype() == DType::kF16, "O3 masters are FP16");
    const size_t n = specs_[i].numel();
    if (!specs_[i].linear_weight || !fp8_weights_) {
      std::memcpy(data_[i].data(), m.data.data(), n * sizeof(uint16_t));
      scale_inv_[i] = m.scale_inv;
      continue;
    }
    // The FP8 GEMM's weight cast: a just-in-time scale from the master's amax (kept when the
    // amax is zero or not finite, as ScalingMeta does), saturating E4M3.
    const float amax = kernels::amax(m.data.data(), DType::kF16, n, m.scale_inv);
    w8_scale_[i] = compute_scale(amax, format_max(DType::kE4M3), 0, true).value_or(w8_scale_[i]);
    values.resize(n);
    kernels::dequantize(values.data(), m.data.data(), DType::kF16, n, m.scale_inv);
    kernels::quantize(data_[i].data(), DType::kE4M3, values.data(), n, w8_scale_[i], true);
    scale_inv_[i] = 1.0f / w8_scale_[i];
  }
  gather();
}

void ZeroReplica::gather() {
  std::vector<dist::Fp8Span> spans;  // byte payloads: F16 tensors travel as 2 bytes/element
  for (size_t i = 0; i < specs_.size(); ++i)
    spans.push_back({static_cast<uint8_t*>(data_[i].data()), data_[i].bytes(), scale_inv_[i]});
  dist::gather_from_owners(spans, owner_);
  for (size_t i = 0; i < specs_.size(); ++i) scale_inv_[i] = spans[i].scale_inv;
}

std::vector<ParamRef> ZeroReplica::refs() const {
  std::vector<ParamRef> r;
  for (size_t i = 0; i < specs_.size(); ++i)
    r.push_back({data_[i].data(), data_[i].dtype(), scale_inv_[i]});
  return r;
}

}  // namespace fp8lm
