// FP8 gradient reduction over the data-parallel ranks (docs/numerics.md, FP8-LM §2.1): E4M3
// payloads, 1 byte/element on the wire, summed by an MPI operator whose partial sums stay
// E4M3. Each tensor's scale is first made common (the minimum over the ranks, s_g); every
// rank requantizes its codes to s_g·m, with m the mode's multiplier, and the averaging
// (÷N) and m are folded into the result's scale_inv, so they cost nothing:
//   g_t ← E4M3(decode(g_t) · scale_inv_t · s_g · m)        on every rank
//   g_t ← Σ_ranks g_t (E4M3 sums),  scale_inv_t ← 1 / (s_g · m · N)
// (the factor and scale_inv are rounded to float32 from the double products shown).
// Modes (multiplier m): auto = μ, adapted per call from the saturation of the result;
// pre = 1/N; post = 1; sqrt = 1/sqrt(N). With one rank there is nothing to average:
// gradients are left as they are and μ does not change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include <vector>

#include "distributed/collectives.h"

namespace fp8lm::dist {

enum class Fp8Scaling : uint8_t { kAuto, kPre, kPost, kSqrt };
std::optional<Fp8Scaling> fp8_scaling_from_name(std::string_view name);  // auto|pre|post|sqrt
std::string_view fp8_scaling_name(Fp8Scaling mode);

struct Fp8ReduceStats {
  float multiplier = 1.0f;  // m applied before quantization in this call
  // Result elements this rank received (every tensor after allreduce, the owned ones after
  // reduce_to_owners) and how many of them sit at ±448.
  int64_t elements = 0;
  int64_t saturated = 0;
};

class Fp8GradReducer {
 public:
  // μ rule (FP8-LM §2.1): more than this fraction of saturated result elements halves μ
  // for the next call; otherwise μ grows by kMuGrowth (doubling over 1000 calls).
  static constexpr double kSaturationThreshold = 1e-5;
  static constexpr double kMuGrowth = 1.0006933874625807;  // 2^(1/1000)
  // Cap on μ, so gradients that stay zero (never saturating) cannot grow it to infinity.
  // No floor is needed: with μ < 1/(2N) no requantized sum can reach 448, so μ grows again.
  static constexpr float kMaxMu = 0x1p32f;

  // Reduces over the ranks of `group` (the data-parallel group; default the world). μ
  // follows the saturation over every rank of `mu_group` (default the world: with tensor
  // parallelism each data-parallel group reduces other shards, and one μ for all keeps the
  // ranks in step and a checkpoint's μ valid for every rank).
  explicit Fp8GradReducer(Fp8Scaling mode = Fp8Scaling::kAuto,
                          size_t bucket_bytes = kDefaultBucketBytes, Group group = {},
                          Group mu_group = {});

  // Every rank ends with the average of every tensor (payload and scale replaced in place).
  // Tensors are E4M3 scaled per tensor, scales finite and positive; all ranks list the same tensors in the same order.
  Fp8ReduceStats allreduce(std::span<const MutableScaledView> grads);
  // O3: the average of tensor t lands on rank owner[t] only (MPI_Reduce per owner's
  // buckets); tensors other ranks own are left untouched. μ follows the saturation over
  // all tensors (one extra scalar all-reduce in auto mode), so it stays equal on all ranks.
  Fp8ReduceStats reduce_to_owners(std::span<const MutableScaledView> grads, std::span<const int> owner);

  // The same all-reduce computed in one process for N = ranks.size() simulated ranks (the
  // numerics lab's grad-scaling and formats experiments): ranks[r][t] is rank r's tensor t
  // (E4M3 or E5M2, scaled per tensor, one format and shape per t across ranks); out[t]
  // receives the average every rank would hold (payload and scale; inputs unchanged).
  // Same shared scales, multiplier, requantization, sums and μ rule as allreduce(). The
  // FP8 partial sums depend on the order: kRing folds ranks 0, 1, …, N−1 one at a time (as a
  // ring reduce-scatter accumulates a chunk), kTree adds pairs, then pairs of pairs (as
  // recursive doubling does). Both are MPI's result at N = 2 bit for bit; at N > 2 which one
  // MPI uses depends on its algorithm choice. Needs no MPI.
  enum class SumOrder : uint8_t { kRing, kTree };
  Fp8ReduceStats allreduce_in_process(std::span<const std::vector<ScaledView>> ranks,
                                      std::span<const MutableScaledView> out,
                                      SumOrder order = SumOrder::kRing);

  Fp8Scaling mode() const { return mode_; }
  // Auto mode's μ for the next call (checkpoint state; starts at 1). Every call uses the
  // minimum of μ over the ranks, so ranks resumed with different values agree again.
  float mu() const { return mu_; }
  void set_mu(float mu);  // in (0, kMaxMu]

 private:
  Fp8ReduceStats reduce(std::span<const MutableScaledView> grads, std::span<const int> owner, bool to_owner);
  float multiplier(float mu, int n_ranks) const;  // m of one call
  void update_mu(float multiplier, double saturated, double elements);

  Fp8Scaling mode_;
  size_t bucket_bytes_;
  Group group_, mu_group_;
  float mu_ = 1.0f;
};

}  // namespace fp8lm::dist
