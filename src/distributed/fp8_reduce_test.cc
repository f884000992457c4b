// FP8 gradient all-reduce and reduce-to-owner (distributed/fp8_reduce.h): exact results at N = 2
// for every scaling mode against a locally computed expectation, ÷N in scale_inv only,
// the μ rule and its agreement across ranks, byte accounting, and N = 1 leaving gradients
// alone. Tensors straddle small buckets so splitting and sharing both happen.
#include "distributed/fp8_reduce.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <string>
#include <vector>

#include "core/check.h"
#include "distributed/dist_test_util.h"
#include "distributed/world.h"
#include "distributed/zero.h"

namespace fp8lm::dist {
namespace {

using test::HostFp8;

const std::vector<size_t> kSizes = {1000, 3, 0, 257, 64, 5000, 1};
constexpr size_t kBucket = 256;

size_t total(const std::vector<size_t>& sizes) {
  size_t n = 0;
  for (size_t s : sizes) n += s;
  return n;
}

// Relative L1 distance between the dequantized result and the exact mean of the inputs.
double mean_error(const std::vector<HostFp8>& got, const std::vector<std::vector<HostFp8>>& all) {
  double err = 0, norm = 0;
  for (size_t t = 0; t < got.size(); ++t)
    for (size_t i = 0; i < got[t].codes.size(); ++i) {
      double mean = 0;
      for (const auto& rank_tensors : all)
        mean += from_e4m3_ref(rank_tensors[t].codes[i]) * double{rank_tensors[t].scale_inv};
      mean /= static_cast<double>(all.size());
      err += std::abs(from_e4m3_ref(got[t].codes[i]) * double{got[t].scale_inv} - mean);
      norm += std::abs(mean);
    }
  return err / norm;
}

TEST(Fp8Scaling, Names) {
  for (Fp8Scaling m : {Fp8Scaling::kAuto, Fp8Scaling::kPre, Fp8Scaling::kPost, Fp8Scaling::kSqrt})
    EXPECT_EQ(fp8_scaling_from_name(fp8_scaling_name(m)), m);
  EXPECT_FALSE(fp8_scaling_from_name("none").has_value());
  EXPECT_EQ(Fp8GradReducer::kMuGrowth, std::exp2(1e-3));
  Fp8GradReducer r;
  EXPECT_THROW(r.set_mu(0.0f), Error);
  EXPECT_THROW(r.set_mu(NAN), Error);
  EXPECT_THROW(r.set_mu(2 * Fp8GradReducer::kMaxMu), Error);
  r.set_mu(Fp8GradReducer::kMaxMu);
  EXPECT_EQ(r.mu(), Fp8GradReducer::kMaxMu);
}

TEST(Fp8AllReduce, EveryModeMatchesTheExactExpectation) {
  const int n = size();
  if (n > 2) GTEST_SKIP() << "exact expectations are for 1 or 2 ranks";
  for (Fp8Scaling mode : {Fp8Scaling::kAuto, Fp8Scaling::kPre, Fp8Scaling::kPost,
                          Fp8Scaling::kSqrt}) {
    const std::string name(fp8_scaling_name(mode));
    std::vector<std::vector<HostFp8>> all;
    for (int r = 0; r < n; ++r) all.push_back(test::make_fp8(r, kSizes, 1));
    std::vector<HostFp8> mine = all[static_cast<size_t>(rank())];
    std::vector<MutableScaledView> grads = test::spans(mine);
    Fp8GradReducer reducer(mode, kBucket);
    reset_comm_bytes();
    const Fp8ReduceStats stats = reducer.allreduce(grads);

    if (n == 1) {  // nothing to average: untouched, no communication, μ unchanged
      for (size_t t = 0; t < kSizes.size(); ++t) {
        test::expect_codes_eq(mine[t].codes, all[0][t].codes, name);
        EXPECT_EQ(mine[t].scale_inv, all[0][t].scale_inv) << name;
      }
      EXPECT_EQ(stats.elements, 0);
      EXPECT_EQ(reducer.mu(), 1.0f);
      EXPECT_EQ(comm_bytes().total_bytes(), 0);
      continue;
    }
    const float m = mode == Fp8Scaling::kPre    ? 0.5f
                    : mode == Fp8Scaling::kSqrt ? static_cast<float>(1 / std::sqrt(2.0))
                                                : 1.0f;
    EXPECT_EQ(stats.multiplier, m) << name;
    const std::vector<HostFp8> want = test::expected_fp8_mean2(all, m);
    int64_t saturated = 0;
    for (size_t t = 0; t < kSizes.size(); ++t) {
      test::expect_codes_eq(mine[t].codes, want[t].codes, name + " tensor " + std::to_string(t));
      EXPECT_EQ(mine[t].scale_inv, want[t].scale_inv) << name << " tensor " << t;
      for (uint8_t c : want[t].codes) saturated += (c & 0x7F) == 0x7E;
    }
    EXPECT_EQ(stats.elements, static_cast<int64_t>(total(kSizes)));
    EXPECT_EQ(stats.saturated, saturated);
    // Independently of the formula: the result is the mean within FP8 rounding.
    EXPECT_LT(mean_error(mine, all), 0.05) << name;
    // Bytes handed to MPI: 1 per element, in ceil(total / bucket) calls, plus one float
    // per tensor (and μ) for the shared scales.
    const CommBytes& c = comm_bytes();
    EXPECT_EQ(c.bytes.at("allreduce_fp8"), static_cast<int64_t>(total(kSizes))) << name;
    EXPECT_EQ(c.calls.at("allreduce_fp8"),
              static_cast<int64_t>((total(kSizes) + kBucket - 1) / kBucket));
    const size_t scalars = kSizes.size() + (mode == Fp8Scaling::kAuto ? 1 : 0);
    EXPECT_EQ(c.bytes.at("scalar"), static_cast<int64_t>(4 * scalars)) << name;
    EXPECT_EQ(c.total_bytes(), static_cast<int64_t>(total(kSizes) + 4 * scalars)) << name;
  }
}

// ÷N lives in scale_inv only: 1.0 on both ranks at scale_inv 2^-7 is code 2.0 with
// scale_inv 2^-8 after post scaling, and code 1.0 with 2^-7 after pre scaling.
TEST(Fp8AllReduce, DivisionByNIsFoldedIntoScaleInv) {
  if (size() != 2) GTEST_SKIP() << "needs 2 ranks";
  for (auto [mode, code, scale_inv] : {std::tuple{Fp8Scaling::kPost, 0x40, 0x1p-8f},
                                       std::tuple{Fp8Scaling::kPre, 0x38, 0x1p-7f}}) {
    std::vector<uint8_t> codes(300, 0x38);
    float g_scale = 0x1p-7f;
    const MutableScaledView g = tensor_view(static_cast<void*>(codes.data()), DType::kE4M3,
        Shape{static_cast<int64_t>(codes.size())}, &g_scale);
    Fp8GradReducer(mode, kBucket).allreduce(std::span<const MutableScaledView>(&g, 1));
    EXPECT_EQ(g.tensor_scale(), scale_inv);
    for (uint8_t c : codes) ASSERT_EQ(c, code);
  }
}

// μ halves when more than 1e-5 of the result saturates, else grows by 2^(1/1000): with
// 200000 elements, 2 saturated (exactly 1e-5) grows, 3 halves.
TEST(Fp8AllReduce, AutoScalingRule) {
  if (size() != 2) GTEST_SKIP() << "needs 2 ranks";
  for (int saturated : {2, 3}) {
    std::vector<uint8_t> codes(200000, 0x38);  // 1 + 1 = 2: far from the maximum
    for (int i = 0; i < saturated; ++i) codes[static_cast<size_t>(i) * 1000] = 0x7E;
    float g_scale = 1.0f;
    const MutableScaledView g = tensor_view(static_cast<void*>(codes.data()), DType::kE4M3,
        Shape{static_cast<int64_t>(codes.size())}, &g_scale);
    Fp8GradReducer reducer(Fp8Scaling::kAuto, size_t{1} << 16);
    const Fp8ReduceStats stats = reducer.allreduce(std::span<const MutableScaledView>(&g, 1));
    EXPECT_EQ(stats.multiplier, 1.0f);
    EXPECT_EQ(stats.saturated, saturated);
    EXPECT_EQ(stats.elements, 200000);
    const float mu = saturated == 2 ? static_cast<float>(Fp8GradReducer::kMuGrowth) : 0.5f;
    EXPECT_EQ(reducer.mu(), mu);
    // The next call quantizes with the new μ and folds it into scale_inv.
    std::fill(codes.begin(), codes.end(), 0x38);
    g_scale = 1.0f;
    EXPECT_EQ(reducer.allreduce(std::span<const MutableScaledView>(&g, 1)).multiplier, mu);
    EXPECT_EQ(g.tensor_scale(), static_cast<float>(1.0 / (double{mu} * 2.0)));
  }
}

// Zero gradients never saturate, so μ would grow forever: it stops at kMaxMu.
TEST(Fp8AllReduce, MuIsCapped) {
  if (size() != 2) GTEST_SKIP() << "needs 2 ranks";
  std::vector<uint8_t> codes(1000, 0x00);
  float g_scale = 1.0f;
  const MutableScaledView g = tensor_view(static_cast<void*>(codes.data()), DType::kE4M3,
      Shape{static_cast<int64_t>(codes.size())}, &g_scale);
  Fp8GradReducer reducer(Fp8Scaling::kAuto, kBucket);
  reducer.set_mu(Fp8GradReducer::kMaxMu);
  EXPECT_EQ(reducer.allreduce(std::span<const MutableScaledView>(&g, 1)).multiplier, Fp8GradReducer::kMaxMu);
  EXPECT_EQ(reducer.mu(), Fp8GradReducer::kMaxMu);
  for (uint8_t c : codes) ASSERT_EQ(c, 0x00);
}

// Ranks holding different μ (e.g. resumed differently) all use the smallest.
TEST(Fp8AllReduce, RanksUseTheSmallestMu) {
  if (size() != 2) GTEST_SKIP() << "needs 2 ranks";
  std::vector<std::vector<HostFp8>> all = {test::make_fp8(0, kSizes, 2),
                                           test::make_fp8(1, kSizes, 2)};
  std::vector<HostFp8> mine = all[static_cast<size_t>(rank())];
  std::vector<MutableScaledView> grads = test::spans(mine);
  Fp8GradReducer reducer(Fp8Scaling::kAuto, kBucket);
  reducer.set_mu(rank() == 0 ? 1.0f : 0.25f);
  EXPECT_EQ(reducer.allreduce(grads).multiplier, 0.25f);
  const std::vector<HostFp8> want = test::expected_fp8_mean2(all, 0.25f);
  for (size_t t = 0; t < kSizes.size(); ++t) {
    test::expect_codes_eq(mine[t].codes, want[t].codes, "tensor " + std::to_string(t));
    EXPECT_EQ(grads[t].tensor_scale(), want[t].scale_inv);
  }
  double lo = reducer.mu(), hi = reducer.mu();
  allreduce_scalars(&lo, 1, ScalarOp::kMin);
  allreduce_scalars(&hi, 1, ScalarOp::kMax);
  EXPECT_EQ(lo, hi);
}

// O3: each tensor's average reaches its owner; other ranks' copies stay as they were.
TEST(Fp8ReduceToOwners, OwnersGetTheAverage) {
  const int n = size();
  if (n > 2) GTEST_SKIP() << "exact expectations are for 1 or 2 ranks";
  std::vector<int64_t> bytes(kSizes.begin(), kSizes.end());
  const Placement place = placement(bytes, n);
  std::vector<std::vector<HostFp8>> all;
  for (int r = 0; r < n; ++r) all.push_back(test::make_fp8(r, kSizes, 3));
  std::vector<HostFp8> mine = all[static_cast<size_t>(rank())];
  std::vector<MutableScaledView> grads = test::spans(mine);
  Fp8GradReducer reducer(Fp8Scaling::kAuto, kBucket);
  reset_comm_bytes();
  const Fp8ReduceStats stats = reducer.reduce_to_owners(grads, place.owner);
  const std::vector<HostFp8> want = n == 2 ? test::expected_fp8_mean2(all, 1.0f) : all[0];
  int64_t owned = 0;
  for (size_t t = 0; t < kSizes.size(); ++t) {
    const bool mine_to_own = place.owner[t] == rank();
    const HostFp8& w = mine_to_own ? want[t] : all[static_cast<size_t>(rank())][t];
    test::expect_codes_eq(mine[t].codes, w.codes, "tensor " + std::to_string(t));
    EXPECT_EQ(grads[t].tensor_scale(), w.scale_inv) << "tensor " << t;
    if (mine_to_own) owned += static_cast<int64_t>(kSizes[t]);
  }
  if (n == 1) {
    EXPECT_EQ(comm_bytes().total_bytes(), 0);
    return;
  }
  EXPECT_EQ(stats.elements, owned);
  // Every rank passes every bucket once (1 byte/element); scalars: shared scales + μ, then
  // the saturation count and element count as doubles.
  const CommBytes& c = comm_bytes();
  EXPECT_EQ(c.bytes.at("reduce_fp8"), static_cast<int64_t>(total(kSizes)));
  EXPECT_EQ(c.bytes.at("scalar"), static_cast<int64_t>(4 * (kSizes.size() + 1) + 16));
  // μ follows the saturation of all tensors and is the same on every rank.
  double lo = reducer.mu(), hi = reducer.mu();
  allreduce_scalars(&lo, 1, ScalarOp::kMin);
  allreduce_scalars(&hi, 1, ScalarOp::kMax);
  EXPECT_EQ(lo, hi);
}


// Read-only views of one simulated rank's tensors.
std::vector<ScaledView> views(std::vector<HostFp8>& tensors) {
  std::vector<ScaledView> out;
  for (const MutableScaledView& v : test::spans(tensors)) out.push_back(v);
  return out;
}

// The in-process all-reduce is MPI's bit for bit at N = 2: every mode, several calls (μ
// starts high, so auto mode saturates and halves it), codes, scales, the
// saturation count and μ equal; the inputs are left as they were.
TEST(Fp8AllReduceInProcess, EqualsMpiAtTwoRanks) {
  if (size() != 2) GTEST_SKIP() << "needs 2 ranks";
  for (Fp8Scaling mode : {Fp8Scaling::kAuto, Fp8Scaling::kPre, Fp8Scaling::kPost,
                          Fp8Scaling::kSqrt}) {
    const std::string name(fp8_scaling_name(mode));
    Fp8GradReducer mpi(mode, kBucket), sim(mode), tree(mode);
    mpi.set_mu(64.0f);  // large enough that sums saturate and auto mode halves μ
    sim.set_mu(64.0f);
    tree.set_mu(64.0f);
    for (uint32_t call = 0; call < 4; ++call) {
      std::vector<std::vector<HostFp8>> all = {test::make_fp8(0, kSizes, 10 + call),
                                               test::make_fp8(1, kSizes, 10 + call)};
      std::vector<HostFp8> mine = all[static_cast<size_t>(rank())];
      const Fp8ReduceStats a = mpi.allreduce(test::spans(mine));

      const std::vector<std::vector<HostFp8>> before = all;
      std::vector<std::vector<ScaledView>> ranks = {views(all[0]), views(all[1])};
      std::vector<HostFp8> out(kSizes.size());
      for (size_t t = 0; t < kSizes.size(); ++t) out[t].codes.assign(kSizes[t], test::kPoison);
      const Fp8ReduceStats b = sim.allreduce_in_process(ranks, test::spans(out));
      std::vector<HostFp8> out_tree(kSizes.size());
      for (size_t t = 0; t < kSizes.size(); ++t) out_tree[t].codes.assign(kSizes[t], test::kPoison);
      tree.allreduce_in_process(ranks, test::spans(out_tree), Fp8GradReducer::SumOrder::kTree);
      for (size_t t = 0; t < kSizes.size(); ++t) {
        test::expect_codes_eq(out[t].codes, mine[t].codes, name + " codes");
        test::expect_codes_eq(out_tree[t].codes, mine[t].codes, name + " codes (tree)");
        EXPECT_EQ(out_tree[t].scale_inv, mine[t].scale_inv);
        EXPECT_EQ(out[t].scale_inv, mine[t].scale_inv) << name << " tensor " << t;
        for (size_t r = 0; r < 2; ++r) {
          test::expect_codes_eq(all[r][t].codes, before[r][t].codes, name + " input changed");
          EXPECT_EQ(all[r][t].scale_inv, before[r][t].scale_inv);
        }
      }
      EXPECT_EQ(a.multiplier, b.multiplier) << name << " call " << call;
      // MPI counts the elements this rank received: all of them in an all-reduce.
      EXPECT_EQ(a.elements, b.elements) << name;
      EXPECT_EQ(a.saturated, b.saturated) << name;
      EXPECT_EQ(mpi.mu(), sim.mu()) << name << " call " << call;
      EXPECT_EQ(mpi.mu(), tree.mu()) << name << " call " << call;
    }
    if (mode == Fp8Scaling::kAuto) {
      EXPECT_LT(sim.mu(), 64.0f) << "the test should halve μ";
    }
  }
}

// At N = 5 the result is the reference E4M3 and E5M2 sums of the codes requantized to the
// shared scale, in ring order ((((r0 + r1) + r2) + r3) + r4) or tree order
// (((r0 + r1) + (r2 + r3)) + r4), computed here with the scalar reference codec.
TEST(Fp8AllReduceInProcess, FiveRanksMatchTheReferenceSums) {
  const std::vector<size_t> sizes = {300, 1, 77};
  for (const bool tree_order : {false, true})
  for (DType format : {DType::kE4M3, DType::kE5M2}) {
    const FloatFormat& f = float_format(format);
    std::vector<std::vector<HostFp8>> all;
    for (int r = 0; r < 5; ++r) {
      all.push_back(test::make_fp8(r, sizes, 3));
      for (HostFp8& t : all.back())  // re-encode the same values in this format
        for (uint8_t& c : t.codes)
          c = static_cast<uint8_t>(encode_ref(from_e4m3_ref(c), f));
    }
    std::vector<std::vector<ScaledView>> ranks;
    for (auto& r : all) {
      ranks.push_back({});
      for (HostFp8& t : r)
        ranks.back().push_back(tensor_view(static_cast<const void*>(t.codes.data()), format,
                                           Shape{static_cast<int64_t>(t.codes.size())},
                                           &t.scale_inv));
    }
    std::vector<HostFp8> out(sizes.size());
    std::vector<MutableScaledView> outs;
    for (size_t t = 0; t < sizes.size(); ++t) {
      out[t].codes.assign(sizes[t], test::kPoison);
      outs.push_back(tensor_view(static_cast<void*>(out[t].codes.data()), format,
                                 Shape{static_cast<int64_t>(sizes[t])}, &out[t].scale_inv));
    }
    Fp8GradReducer sim(Fp8Scaling::kSqrt);
    sim.allreduce_in_process(ranks, outs,
                             tree_order ? Fp8GradReducer::SumOrder::kTree : Fp8GradReducer::SumOrder::kRing);
    const double m = static_cast<float>(1.0 / std::sqrt(5.0));
    for (size_t t = 0; t < sizes.size(); ++t) {
      float shared = INFINITY;
      for (auto& r : all) shared = std::min(shared, 1.0f / r[t].scale_inv);
      std::vector<uint8_t> want(sizes[t]);
      auto add = [&](float a, float b) { return decode_ref(encode_ref(a + b, f), f); };
      for (size_t i = 0; i < sizes[t]; ++i) {
        float term[5];
        for (size_t r = 0; r < all.size(); ++r) {
          const float factor = static_cast<float>(double{shared} * m * all[r][t].scale_inv);
          term[r] = decode_ref(encode_ref(decode_ref(all[r][t].codes[i], f) * factor, f), f);
        }
        const float sum = tree_order
                              ? add(add(add(term[0], term[1]), add(term[2], term[3])), term[4])
                              : add(add(add(add(term[0], term[1]), term[2]), term[3]), term[4]);
        want[i] = static_cast<uint8_t>(encode_ref(sum, f));
      }
      test::expect_codes_eq(out[t].codes, want,
                            std::string(dtype_name(format)) + (tree_order ? " tree" : " ring"));
      EXPECT_EQ(out[t].scale_inv, static_cast<float>(1.0 / (double{shared} * m * 5)));
    }
  }
}

}  // namespace
}  // namespace fp8lm::dist
