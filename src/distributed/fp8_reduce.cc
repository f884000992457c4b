// FP8 gradient all-reduce and reduce-to-owner with shared scales and automatic scaling
// (distributed/fp8_reduce.h).
#include "distributed/fp8_reduce.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "distributed/bucket.h"
#include "distributed/world.h"
#include "kernels/reduce_ops.h"

namespace fp8lm::dist {

std::optional<Fp8Scaling> fp8_scaling_from_name(std::string_view name) {
  if (name == "auto") return Fp8Scaling::kAuto;
  if (name == "pre") return Fp8Scaling::kPre;
  if (name == "post") return Fp8Scaling::kPost;
  if (name == "sqrt") return Fp8Scaling::kSqrt;
  return std::nullopt;
}

std::string_view fp8_scaling_name(Fp8Scaling mode) {
  switch (mode) {
    case Fp8Scaling::kAuto:
      return "auto";
    case Fp8Scaling::kPre:
      return "pre";
    case Fp8Scaling::kPost:
      return "post";
    case Fp8Scaling::kSqrt:
      return "sqrt";
  }
  return "?";
}

Fp8GradReducer::Fp8GradReducer(Fp8Scaling mode, size_t bucket_bytes)
    : mode_(mode), bucket_bytes_(bucket_bytes) {}

void Fp8GradReducer::set_mu(float mu) {
  FP8LM_CHECK(mu > 0.0f && mu <= kMaxMu, "mu = ", mu);
  mu_ = mu;
}

Fp8ReduceStats Fp8GradReducer::allreduce(std::span<const MutableScaledView> grads) {
  return reduce(grads, {}, /*to_owner=*/false);
}

Fp8ReduceStats Fp8GradReducer::reduce_to_owners(std::span<const MutableScaledView> grads,
                                                std::span<const int> owner) {
  FP8LM_CHECK(owner.size() == grads.size(), owner.size(), " owners for ", grads.size(),
              " tensors");
  return reduce(grads, owner, /*to_owner=*/true);
}

Fp8ReduceStats Fp8GradReducer::reduce(std::span<const MutableScaledView> grads, std::span<const int> owner,
                                      bool to_owner) {
  const int n_ranks = size();
  if (n_ranks == 1 || grads.empty()) return {};
  const int me = rank();
  const size_t T = grads.size();
  std::vector<float> scale_inv(T);
  for (size_t t = 0; t < T; ++t) {
    FP8LM_CHECK(grads[t].data.dtype == DType::kE4M3 && grads[t].mode == ScalingMode::kTensor,
                "tensor ", t, ": the FP8 all-reduce takes E4M3 scaled per tensor, got ",
                dtype_name(grads[t].data.dtype), " ", scaling_mode_name(grads[t].mode));
    scale_inv[t] = grads[t].tensor_scale();
    FP8LM_CHECK(std::isfinite(scale_inv[t]) && scale_inv[t] > 0.0f, "tensor ", t,
                ": scale_inv = ", scale_inv[t]);
    if (to_owner)
      FP8LM_CHECK(owner[t] >= 0 && owner[t] < n_ranks, "tensor ", t, ": owner ", owner[t]);
  }

  // Shared scales s_g = min over ranks (and μ, so all ranks use one), in one call.
  const bool is_auto = mode_ == Fp8Scaling::kAuto;
  std::vector<float> shared(T + (is_auto ? 1 : 0));
  for (size_t t = 0; t < T; ++t) shared[t] = 1.0f / scale_inv[t];
  if (is_auto) shared[T] = mu_;
  detail::allreduce(shared.data(), shared.size(), MPI_FLOAT, MPI_MIN, "scalar");

  const double n = n_ranks;
  const float multiplier = is_auto                      ? shared[T]
                           : mode_ == Fp8Scaling::kPre  ? static_cast<float>(1.0 / n)
                           : mode_ == Fp8Scaling::kPost ? 1.0f
                                                        : static_cast<float>(1.0 / std::sqrt(n));
  std::vector<float> factor(T), result_scale_inv(T);
  for (size_t t = 0; t < T; ++t) {
    const double s = static_cast<double>(shared[t]) * multiplier;
    factor[t] = static_cast<float>(s * scale_inv[t]);
    result_scale_inv[t] = static_cast<float>(1.0 / (s * n));
  }

  // One group per root: all tensors for the all-reduce, each owner's tensors otherwise.
  std::vector<size_t> numel(T);
  for (size_t t = 0; t < T; ++t) numel[t] = grads[t].numel();
  auto codes = [&](size_t t) { return static_cast<uint8_t*>(grads[t].data.data); };
  std::vector<std::vector<size_t>> groups(to_owner ? static_cast<size_t>(n_ranks) : 1);
  for (size_t t = 0; t < T; ++t) groups[to_owner ? static_cast<size_t>(owner[t]) : 0].push_back(t);
  size_t largest = 0;
  for (const auto& g : groups) largest = std::max(largest, detail::total_elements(numel, g));
  detail::Staging staging(bucket_bytes_, 1, largest);
  uint8_t* buf = staging.as<uint8_t>();

  Fp8ReduceStats stats;
  stats.multiplier = multiplier;
  for (size_t root = 0; root < groups.size(); ++root) {
    const bool receives = !to_owner || static_cast<int>(root) == me;
    detail::for_each_window(numel, groups[root], staging.capacity(), [&](auto pieces, size_t w) {
      for (const detail::Piece& p : pieces)
        kernels::e4m3_rescale(buf + p.offset, codes(p.tensor) + p.begin, p.count,
                              factor[p.tensor]);
      if (to_owner)
        detail::reduce(buf, w, detail::e4m3_type(), detail::e4m3_sum(), static_cast<int>(root),
                       "reduce_fp8");
      else
        detail::allreduce(buf, w, detail::e4m3_type(), detail::e4m3_sum(), "allreduce_fp8");
      if (!receives) return;
      for (const detail::Piece& p : pieces)
        std::memcpy(codes(p.tensor) + p.begin, buf + p.offset, p.count);
      stats.elements += static_cast<int64_t>(w);
      stats.saturated += static_cast<int64_t>(kernels::e4m3_count_saturated(buf, w));
    });
    if (receives)
      for (size_t t : groups[root]) grads[t].set_tensor_scale(result_scale_inv[t]);
  }

  if (is_auto) {
    double counts[2] = {static_cast<double>(stats.saturated), static_cast<double>(stats.elements)};
    if (to_owner) allreduce_scalars(counts, 2, ScalarOp::kSum);
    double next = multiplier;
    if (counts[1] > 0)
      next *= counts[0] / counts[1] > kSaturationThreshold ? 0.5 : kMuGrowth;
    mu_ = static_cast<float>(std::min(next, double{kMaxMu}));
  }
  return stats;
}

}  // namespace fp8lm::dist
