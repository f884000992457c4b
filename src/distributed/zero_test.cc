// FP8 ZeRO helpers (distributed/zero.h): placement (exact small cases, determinism, the balance
// bound on random inputs) and the owners' weight broadcast, alone and after
// reduce_to_owners, where reduce + gather must equal the all-reduce.
#include "distributed/zero.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "distributed/dist_test_util.h"
#include "distributed/fp8_reduce.h"
#include "distributed/world.h"

namespace fp8lm::dist {
namespace {

using test::HostFp8;

TEST(Placement, LargestFirstToTheLeastLoadedRank) {
  // Order: 1 (40), 5 (40), 2 (20), 3 (20), 0 (10), 4 (5); ties go to rank 0.
  const std::vector<int64_t> sizes = {10, 40, 20, 20, 5, 40};
  const Placement two = placement(sizes, 2);
  EXPECT_EQ(two.owner, (std::vector<int>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(two.rank_bytes, (std::vector<int64_t>{70, 65}));
  const Placement three = placement(sizes, 3);
  EXPECT_EQ(three.owner, (std::vector<int>{0, 0, 2, 2, 1, 1}));
  EXPECT_EQ(three.rank_bytes, (std::vector<int64_t>{50, 45, 40}));
  const Placement one = placement(sizes, 1);
  EXPECT_EQ(one.owner, (std::vector<int>(6, 0)));
  EXPECT_EQ(one.rank_bytes, (std::vector<int64_t>{135}));
  const Placement more_ranks = placement(std::vector<int64_t>{3, 3}, 4);
  EXPECT_EQ(more_ranks.owner, (std::vector<int>{0, 1}));
  EXPECT_EQ(more_ranks.rank_bytes, (std::vector<int64_t>{3, 3, 0, 0}));
  EXPECT_TRUE(placement({}, 2).owner.empty());
  EXPECT_THROW(placement(sizes, 0), Error);
  EXPECT_THROW(placement(std::vector<int64_t>{4, -1}, 2), Error);
}

TEST(Placement, BalancedAndDeterministicOnRandomInputs) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    const int world = 1 + static_cast<int>(rng() % 9);
    std::vector<int64_t> sizes(rng() % 60);
    for (int64_t& s : sizes) {
      // Mixed scales and many duplicates, as in a transformer's parameter list.
      s = trial % 3 == 0 ? static_cast<int64_t>(rng() % 4) * 1024
                         : static_cast<int64_t>(rng() % 1000000);
    }
    const Placement p = placement(sizes, world);
    ASSERT_EQ(p.owner.size(), sizes.size());
    ASSERT_EQ(p.rank_bytes.size(), static_cast<size_t>(world));
    std::vector<int64_t> load(static_cast<size_t>(world), 0);
    for (size_t t = 0; t < sizes.size(); ++t) {
      ASSERT_TRUE(p.owner[t] >= 0 && p.owner[t] < world);
      load[static_cast<size_t>(p.owner[t])] += sizes[t];
    }
    EXPECT_EQ(load, p.rank_bytes);
    const int64_t largest = sizes.empty() ? 0 : *std::max_element(sizes.begin(), sizes.end());
    const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
    EXPECT_LE(*hi, *lo + largest) << "trial " << trial;
    const Placement again = placement(sizes, world);
    EXPECT_EQ(again.owner, p.owner);
  }
}

std::vector<size_t> sizes_of(const std::vector<int64_t>& bytes) {
  return std::vector<size_t>(bytes.begin(), bytes.end());
}

// Owners broadcast their tensors; every other copy starts poisoned.
TEST(GatherFromOwners, EveryRankGetsTheOwnersWeights) {
  const std::vector<int64_t> bytes = {3000, 10, 0, 700, 700, 1, 5000};
  const std::vector<size_t> sizes = sizes_of(bytes);
  const int n = size(), me = rank();
  const Placement place = placement(bytes, n);
  std::vector<std::vector<HostFp8>> by_owner;
  for (int r = 0; r < n; ++r) by_owner.push_back(test::make_fp8(r, sizes, 5));
  std::vector<HostFp8> mine(sizes.size());
  for (size_t t = 0; t < sizes.size(); ++t) {
    if (place.owner[t] == me) {
      mine[t] = by_owner[static_cast<size_t>(me)][t];
    } else {
      mine[t].codes.assign(sizes[t], test::kPoison);
      mine[t].scale_inv = NAN;
    }
  }
  std::vector<MutableScaledView> w = test::spans(mine);
  reset_comm_bytes();
  gather_from_owners(w, place.owner, 1024);
  for (size_t t = 0; t < sizes.size(); ++t) {
    const HostFp8& want = by_owner[static_cast<size_t>(place.owner[t])][t];
    test::expect_codes_eq(mine[t].codes, want.codes, "tensor " + std::to_string(t));
    EXPECT_EQ(w[t].tensor_scale(), want.scale_inv) << "tensor " << t;
  }
  // Per owner bucket: its scale_invs (4 bytes each) and its codes, 1 byte per element.
  int64_t want_bytes = 0;
  for (int64_t b : bytes) want_bytes += b + 4;
  EXPECT_EQ(comm_bytes().total_bytes(), n == 1 ? 0 : want_bytes);
  if (n > 1) {
    EXPECT_EQ(comm_bytes().bytes.at("allgather"), want_bytes);
  }
}

// Any dtype and scaling travels with its scales: 128×128-block E4M3 with an F32 grid, MX with
// an E8M0 grid, FP16 with a per-tensor scale, unscaled FP32. Every byte of payload and scales
// arrives as the owner holds it; the stream carries exactly those bytes.
TEST(GatherFromOwners, BlockScaledTensorsTravelWithTheirGrids) {
  struct Held {
    std::vector<uint8_t> data, scales;
    MutableScaledView view;
  };
  const int n = size(), me = rank();
  const struct {
    DType t;
    Shape shape;
    ScalingMode mode;
  } kinds[] = {{DType::kE4M3, {130, 200}, ScalingMode::kBlock128},
               {DType::kE4M3, {3, 70}, ScalingMode::kMx32},
               {DType::kF16, {50}, ScalingMode::kTensor},
               {DType::kF32, {7, 3}, ScalingMode::kNone},
               {DType::kE4M3, {257, 129}, ScalingMode::kBlock128}};
  std::vector<Held> held(std::size(kinds));
  std::vector<int64_t> sizes;
  for (size_t t = 0; t < held.size(); ++t) {
    Held& h = held[t];
    const auto& k = kinds[t];
    h.data.resize(static_cast<size_t>(k.shape.numel()) * dtype_size(k.t));
    const Shape grid = k.mode == ScalingMode::kNone ? Shape{} : scale_grid_shape(k.shape, k.mode);
    const DType st = k.mode == ScalingMode::kMx32 ? DType::kE8M0 : DType::kF32;
    h.scales.resize(k.mode == ScalingMode::kNone ? 0 : static_cast<size_t>(grid.numel()) * dtype_size(st));
    h.view = {{h.data.data(), k.t, k.shape}, k.mode, {h.scales.data(), st, grid}};
    sizes.push_back(static_cast<int64_t>(h.data.size()));
  }
  const Placement place = placement(sizes, n);
  auto owner_bytes = [](size_t t, size_t i, size_t salt) {  // what owner of t holds
    return static_cast<uint8_t>((t * 131 + i * 7 + salt) % 251);
  };
  for (size_t t = 0; t < held.size(); ++t) {
    const bool mine = place.owner[t] == me;
    for (size_t i = 0; i < held[t].data.size(); ++i)
      held[t].data[i] = mine ? owner_bytes(t, i, 0) : test::kPoison;
    for (size_t i = 0; i < held[t].scales.size(); ++i)
      held[t].scales[i] = mine ? owner_bytes(t, i, 1) : test::kPoison;
  }
  std::vector<MutableScaledView> views;
  int64_t want_bytes = 0;
  for (const Held& h : held) {
    views.push_back(h.view);
    want_bytes += static_cast<int64_t>(h.data.size() + h.scales.size());
  }
  reset_comm_bytes();
  gather_from_owners(views, place.owner, 1000);
  for (size_t t = 0; t < held.size(); ++t) {
    for (size_t i = 0; i < held[t].data.size(); ++i)
      ASSERT_EQ(held[t].data[i], owner_bytes(t, i, 0)) << "tensor " << t << " byte " << i;
    for (size_t i = 0; i < held[t].scales.size(); ++i)
      ASSERT_EQ(held[t].scales[i], owner_bytes(t, i, 1)) << "tensor " << t << " scale byte " << i;
  }
  EXPECT_EQ(comm_bytes().total_bytes(), n == 1 ? 0 : want_bytes);
}

// The O3 path (reduce to owners, then gather) gives every rank exactly what the
// all-reduce gives.
TEST(GatherFromOwners, ReduceThenGatherEqualsAllReduce) {
  if (size() > 2) GTEST_SKIP() << "sum orders of reduce and all-reduce agree for 1 or 2 ranks";
  const std::vector<int64_t> bytes = {900, 31, 4000, 64, 2};
  const std::vector<size_t> sizes = sizes_of(bytes);
  const Placement place = placement(bytes, size());
  std::vector<HostFp8> a = test::make_fp8(rank(), sizes, 9), b = a;
  std::vector<MutableScaledView> sa = test::spans(a), sb = test::spans(b);
  Fp8GradReducer(Fp8Scaling::kPost, 512).allreduce(sa);
  Fp8GradReducer(Fp8Scaling::kPost, 512).reduce_to_owners(sb, place.owner);
  gather_from_owners(sb, place.owner, 512);
  for (size_t t = 0; t < sizes.size(); ++t) {
    test::expect_codes_eq(b[t].codes, a[t].codes, "tensor " + std::to_string(t));
    EXPECT_EQ(sb[t].tensor_scale(), sa[t].tensor_scale()) << "tensor " << t;
  }
}

}  // namespace
}  // namespace fp8lm::dist
