// Tensor placement and the owners' weight broadcast (distributed/zero.h).
#include "distributed/zero.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/check.h"
#include "distributed/bucket.h"
#include "distributed/world.h"

namespace fp8lm::dist {

Placement placement(std::span<const int64_t> sizes_in_bytes, int world_size) {
  FP8LM_CHECK(world_size >= 1, "world_size = ", world_size);
  const size_t T = sizes_in_bytes.size();
  std::vector<size_t> order(T);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return sizes_in_bytes[a] > sizes_in_bytes[b];
  });
  Placement p;
  p.owner.assign(T, 0);
  p.rank_bytes.assign(static_cast<size_t>(world_size), 0);
  for (size_t t : order) {
    FP8LM_CHECK(sizes_in_bytes[t] >= 0, "tensor ", t, ": ", sizes_in_bytes[t], " bytes");
    // min_element returns the first minimum: the lowest rank among equals.
    const auto least = std::min_element(p.rank_bytes.begin(), p.rank_bytes.end());
    *least += sizes_in_bytes[t];
    p.owner[t] = static_cast<int>(least - p.rank_bytes.begin());
  }
  return p;
}

void gather_from_owners(std::span<Fp8Span> weights, std::span<const int> owner,
                        size_t bucket_bytes) {
  FP8LM_CHECK(owner.size() == weights.size(), owner.size(), " owners for ", weights.size(),
              " tensors");
  const int n_ranks = size();
  if (n_ranks == 1) return;
  const int me = rank();
  // Per owner, the byte stream is [its scale_invs as float32][its tensors' codes]: entry 0
  // of `numel` is the scale_inv block, entry 1 + t tensor t.
  std::vector<std::vector<size_t>> groups(static_cast<size_t>(n_ranks));
  for (size_t t = 0; t < weights.size(); ++t) {
    FP8LM_CHECK(owner[t] >= 0 && owner[t] < n_ranks, "tensor ", t, ": owner ", owner[t]);
    groups[static_cast<size_t>(owner[t])].push_back(t);
  }
  std::vector<size_t> numel(weights.size() + 1);
  for (size_t t = 0; t < weights.size(); ++t) numel[1 + t] = weights[t].numel;
  size_t largest = 0;
  for (const auto& g : groups) {
    size_t bytes = g.size() * sizeof(float);
    for (size_t t : g) bytes += weights[t].numel;
    largest = std::max(largest, bytes);
  }
  detail::Staging staging(bucket_bytes, 1, largest);
  uint8_t* buf = staging.as<uint8_t>();

  for (int root = 0; root < n_ranks; ++root) {
    const std::vector<size_t>& g = groups[static_cast<size_t>(root)];
    if (g.empty()) continue;
    const bool sends = root == me;
    std::vector<float> scale_inv(g.size());
    if (sends)
      for (size_t i = 0; i < g.size(); ++i) scale_inv[i] = weights[g[i]].scale_inv;
    auto* scale_bytes = reinterpret_cast<uint8_t*>(scale_inv.data());
    numel[0] = g.size() * sizeof(float);
    std::vector<size_t> order{0};
    for (size_t t : g) order.push_back(1 + t);
    auto piece_data = [&](const detail::Piece& p) {
      return (p.tensor == 0 ? scale_bytes : weights[p.tensor - 1].data) + p.begin;
    };
    detail::for_each_window(numel, order, staging.capacity(), [&](auto pieces, size_t w) {
      if (sends)
        for (const detail::Piece& p : pieces) std::memcpy(buf + p.offset, piece_data(p), p.count);
      detail::bcast(buf, w, MPI_BYTE, root, "allgather");
      if (!sends)
        for (const detail::Piece& p : pieces) std::memcpy(piece_data(p), buf + p.offset, p.count);
    });
    if (!sends)
      for (size_t i = 0; i < g.size(); ++i) weights[g[i]].scale_inv = scale_inv[i];
  }
}

}  // namespace fp8lm::dist
