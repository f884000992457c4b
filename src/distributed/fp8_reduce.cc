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

Fp8GradReducer::Fp8GradReducer(Fp8Scaling mode, size_t bucket_bytes, Group group,
                               Group mu_group)
    : mode_(mode), bucket_bytes_(bucket_bytes), group_(group), mu_group_(mu_group) {}

void Fp8GradReducer::set_mu(float mu) {
  FP8LM_CHECK(mu > 0.0f && mu <= kMaxMu, "mu = ", mu);
  mu_ = mu;
}

namespace {
// What rank codes are multiplied by before the sum, and the result's scale_inv, from the
// shared scale s_g and the multiplier m (docs/numerics.md): factor = s_g·m·scale_inv,
// result = 1/(s_g·m·N), products in double.
float requant_factor(float shared, float multiplier, float scale_inv) {
  return static_cast<float>(static_cast<double>(shared) * multiplier * scale_inv);
}
float result_scale_inv(float shared, float multiplier, int n_ranks) {
  return static_cast<float>(1.0 / (static_cast<double>(shared) * multiplier * n_ranks));
}
}  // namespace

float Fp8GradReducer::multiplier(float mu, int n_ranks) const {
  const double n = n_ranks;
  switch (mode_) {
    case Fp8Scaling::kAuto:
      return mu;
    case Fp8Scaling::kPre:
      return static_cast<float>(1.0 / n);
    case Fp8Scaling::kPost:
      return 1.0f;
    case Fp8Scaling::kSqrt:
      return static_cast<float>(1.0 / std::sqrt(n));
  }
  return 1.0f;
}

void Fp8GradReducer::update_mu(float multiplier, double saturated, double elements) {
  if (mode_ != Fp8Scaling::kAuto || elements <= 0) return;
  const double next = multiplier * (saturated / elements > kSaturationThreshold ? 0.5 : kMuGrowth);
  mu_ = static_cast<float>(std::min(next, double{kMaxMu}));
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
  const int n_ranks = group_.size();
  if (n_ranks == 1 || grads.empty()) return {};
  const int me = group_.rank();
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
  detail::allreduce(shared.data(), shared.size(), MPI_FLOAT, MPI_MIN, "scalar", group_);

  const float multiplier = this->multiplier(is_auto ? shared[T] : mu_, n_ranks);
  std::vector<float> factor(T), result(T);
  for (size_t t = 0; t < T; ++t) {
    factor[t] = requant_factor(shared[t], multiplier, scale_inv[t]);
    result[t] = result_scale_inv(shared[t], multiplier, n_ranks);
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
        kernels::fp8_rescale(DType::kE4M3, buf + p.offset, codes(p.tensor) + p.begin, p.count,
                              factor[p.tensor]);
      if (to_owner)
        detail::reduce(buf, w, detail::e4m3_type(), detail::e4m3_sum(), static_cast<int>(root),
                       "reduce_fp8", group_);
      else
        detail::allreduce(buf, w, detail::e4m3_type(), detail::e4m3_sum(), "allreduce_fp8",
                          group_);
      if (!receives) return;
      for (const detail::Piece& p : pieces)
        std::memcpy(codes(p.tensor) + p.begin, buf + p.offset, p.count);
      stats.elements += static_cast<int64_t>(w);
      stats.saturated += static_cast<int64_t>(kernels::fp8_count_saturated(DType::kE4M3, buf, w));
    });
    if (receives)
      for (size_t t : groups[root]) grads[t].set_tensor_scale(result[t]);
  }

  if (is_auto) {
    double counts[2] = {static_cast<double>(stats.saturated), static_cast<double>(stats.elements)};
    // The fraction over every rank of mu_group (ranks of one data-parallel group hold equal
    // counts after an all-reduce: duplicates leave the fraction as it is).
    if (mu_group_.size() != n_ranks)
      allreduce_scalars(counts, 2, ScalarOp::kSum, mu_group_);
    else if (to_owner)
      allreduce_scalars(counts, 2, ScalarOp::kSum, group_);
    update_mu(multiplier, counts[0], counts[1]);
  }
  return stats;
}

Fp8ReduceStats Fp8GradReducer::allreduce_in_process(std::span<const std::vector<ScaledView>> ranks,
                                                    std::span<const MutableScaledView> out,
                                                    SumOrder order) {
  const int n_ranks = static_cast<int>(ranks.size());
  FP8LM_CHECK(n_ranks >= 1, "allreduce_in_process: no ranks");
  const size_t T = out.size();
  for (const auto& r : ranks)
    FP8LM_CHECK(r.size() == T, "allreduce_in_process: ", r.size(), " tensors for ", T);
  for (size_t t = 0; t < T; ++t) {
    const DType f = out[t].data.dtype;
    FP8LM_CHECK((f == DType::kE4M3 || f == DType::kE5M2) && out[t].mode == ScalingMode::kTensor,
                "tensor ", t, ": the FP8 all-reduce takes E4M3 or E5M2 scaled per tensor");
    for (const auto& r : ranks) {
      const ScaledView& g = r[t];
      FP8LM_CHECK(g.data.dtype == f && g.mode == ScalingMode::kTensor && g.numel() == out[t].numel(),
                  "tensor ", t, ": ranks differ in format, scaling or size");
      FP8LM_CHECK(std::isfinite(g.tensor_scale()) && g.tensor_scale() > 0.0f, "tensor ", t,
                  ": scale_inv = ", g.tensor_scale());
    }
  }
  auto codes = [](const ScaledView& v) { return static_cast<const uint8_t*>(v.data.data); };
  if (n_ranks == 1) {  // nothing to average: the gradient as it is, μ unchanged
    for (size_t t = 0; t < T; ++t) {
      if (out[t].numel() > 0) std::memcpy(out[t].data.data, codes(ranks[0][t]), out[t].numel());
      out[t].set_tensor_scale(ranks[0][t].tensor_scale());
    }
    return {};
  }
  const float multiplier = this->multiplier(mu_, n_ranks);
  Fp8ReduceStats stats;
  stats.multiplier = multiplier;
  std::vector<uint8_t> term;
  std::vector<std::vector<uint8_t>> partial;  // kTree: every rank's requantized codes
  for (size_t t = 0; t < T; ++t) {
    const DType f = out[t].data.dtype;
    const size_t n = out[t].numel();
    float shared = 1.0f / ranks[0][t].tensor_scale();  // min over ranks of the scales
    for (const auto& r : ranks) shared = std::min(shared, 1.0f / r[t].tensor_scale());
    auto* acc = static_cast<uint8_t*>(out[t].data.data);
    auto requantized = [&](int r, uint8_t* dst) {
      const ScaledView& g = ranks[static_cast<size_t>(r)][t];
      kernels::fp8_rescale(f, dst, codes(g), n, requant_factor(shared, multiplier, g.tensor_scale()));
    };
    if (order == SumOrder::kRing) {
      term.resize(n);
      for (int r = 0; r < n_ranks; ++r) {
        requantized(r, r == 0 ? acc : term.data());
        if (r > 0) kernels::fp8_add(f, acc, term.data(), n);
      }
    } else {
      partial.resize(static_cast<size_t>(n_ranks));
      for (int r = 0; r < n_ranks; ++r) {
        partial[static_cast<size_t>(r)].resize(n);
        requantized(r, partial[static_cast<size_t>(r)].data());
      }
      for (size_t stride = 1; stride < partial.size(); stride *= 2)
        for (size_t r = 0; r + stride < partial.size(); r += 2 * stride)
          kernels::fp8_add(f, partial[r].data(), partial[r + stride].data(), n);
      if (n > 0) std::memcpy(acc, partial[0].data(), n);
    }
    out[t].set_tensor_scale(result_scale_inv(shared, multiplier, n_ranks));
    stats.elements += static_cast<int64_t>(n);
    stats.saturated += static_cast<int64_t>(kernels::fp8_count_saturated(f, acc, n));
  }
  update_mu(multiplier, static_cast<double>(stats.saturated), static_cast<double>(stats.elements));
  return stats;
}

}  // namespace fp8lm::dist
