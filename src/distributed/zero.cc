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

void gather_from_owners(std::span<const MutableScaledView> weights, std::span<const int> owner,
                        size_t bucket_bytes, const Group& group) {
  FP8LM_CHECK(owner.size() == weights.size(), owner.size(), " owners for ", weights.size(),
              " tensors");
  const int n_ranks = group.size();
  if (n_ranks == 1) return;
  // A byte stream per owner: for each of its tensors t, entry 2t (t's scales, none when
  // unscaled) then entry 2t + 1 (its payload).
  std::vector<std::vector<size_t>> groups(static_cast<size_t>(n_ranks));
  for (size_t t = 0; t < weights.size(); ++t) {
    FP8LM_CHECK(owner[t] >= 0 && owner[t] < n_ranks, "tensor ", t, ": owner ", owner[t]);
    groups[static_cast<size_t>(owner[t])].push_back(t);
  }
  std::vector<size_t> bytes(2 * weights.size());
  auto piece_data = [&](size_t entry) {
    const MutableScaledView& v = weights[entry / 2];
    return static_cast<uint8_t*>(entry % 2 == 0 ? v.scales.data : v.data.data);
  };
  for (size_t t = 0; t < weights.size(); ++t) {
    bytes[2 * t] = weights[t].mode == ScalingMode::kNone ? 0 : weights[t].scales.bytes();
    bytes[2 * t + 1] = weights[t].data.bytes();
  }
  size_t largest = 0;
  for (const auto& g : groups) {
    size_t total = 0;
    for (size_t t : g) total += bytes[2 * t] + bytes[2 * t + 1];
    largest = std::max(largest, total);
  }
  detail::Staging staging(bucket_bytes, 1, largest);
  uint8_t* buf = staging.as<uint8_t>();
  const int me = group.rank();
  for (int root = 0; root < n_ranks; ++root) {
    const std::vector<size_t>& g = groups[static_cast<size_t>(root)];
    if (g.empty()) continue;
    const bool sends = root == me;
    std::vector<size_t> order;
    for (size_t t : g) order.insert(order.end(), {2 * t, 2 * t + 1});
    detail::for_each_window(bytes, order, staging.capacity(), [&](auto pieces, size_t w) {
      if (sends)
        for (const detail::Piece& p : pieces)
          std::memcpy(buf + p.offset, piece_data(p.tensor) + p.begin, p.count);
      detail::bcast(buf, w, MPI_BYTE, root, "allgather", group);
      if (!sends)
        for (const detail::Piece& p : pieces)
          std::memcpy(piece_data(p.tensor) + p.begin, buf + p.offset, p.count);
    });
  }
}

}  // namespace fp8lm::dist
