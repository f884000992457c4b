// FP8 ZeRO helpers (docs/numerics.md, FP8-LM §2.3 Algorithm 1): whole tensors are placed on
// owner ranks, so each tensor keeps its own scale; the owner updates its tensors (their
// gradients reach it via Fp8GradReducer::reduce_to_owners) and then broadcasts the new
// E4M3 weights and their scales to everyone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "distributed/collectives.h"

namespace fp8lm::dist {

struct Placement {
  std::vector<int> owner;           // per tensor
  std::vector<int64_t> rank_bytes;  // per rank: bytes of the tensors it owns
};

// Greedy placement: tensors by size, largest first (ties: lower index first), each to the
// rank with the fewest bytes so far (ties: lower rank). Deterministic, pure; the most
// loaded rank exceeds the least loaded by at most the largest tensor.
Placement placement(std::span<const int64_t> sizes_in_bytes, int world_size);

// Every rank ends with each tensor's payload and scales as its owner holds them (any dtype
// and scaling: a per-tensor scale is 4 bytes, a block grid its bytes): per owner, one
// broadcast stream of its tensors' scales and payloads, bucketed. Recorded as "allgather".
// With one rank nothing moves. Owners are ranks of `g` (the data-parallel group).
void gather_from_owners(std::span<const MutableScaledView> weights, std::span<const int> owner,
                        size_t bucket_bytes = kDefaultBucketBytes, const Group& g = {});

}  // namespace fp8lm::dist
