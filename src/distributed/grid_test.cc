// The process grid (distributed/grid.h) and the tensor-parallel collectives
// (distributed/collectives.h) at N = 2 (mpirun) and N = 1: group sizes and ranks, exact sums,
// maxima, gathers and reduce-scatters against local expectations, per-group byte counts,
// and layouts that do not divide the world refused.
#include "distributed/grid.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/check.h"
#include "distributed/collectives.h"
#include "numerics/cast_ref.h"

namespace fp8lm::dist {
namespace {

std::vector<float> values(int r, size_t n) {
  std::mt19937 rng(17u + static_cast<uint32_t>(r));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 20) - 10);
  return v;
}

TEST(Grid, PlacesRanksTensorParallelFirst) {
  const int world = size(), me = rank();
  const Grid g = make_grid(world, 1);  // every rank in one tensor-parallel group
  EXPECT_EQ(g.tp, world);
  EXPECT_EQ(g.dp, 1);
  EXPECT_EQ(g.tp_rank, me);
  EXPECT_EQ(g.tp_group.size(), world);
  EXPECT_EQ(g.tp_group.rank(), me);
  EXPECT_EQ(g.dp_group.size(), 1);
  const Grid d = make_grid(1, 1);  // all data-parallel
  EXPECT_EQ(d.dp, world);
  EXPECT_EQ(d.dp_rank, me);
  EXPECT_EQ(d.tp_group.size(), 1);
  EXPECT_EQ(d.dp_group.size(), world);
  EXPECT_THROW(make_grid(world + 1, 1), Error);
  EXPECT_THROW(make_grid(0, 1), Error);
  try {
    make_grid(3, 1);
    if (world % 3 != 0) ADD_FAILURE() << "tp = 3 accepted on " << world << " ranks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.tp"), std::string::npos) << e.what();
  }
}

TEST(Grid, TensorParallelCollectivesAreExactAndCounted) {
  const Grid g = make_grid(size(), 1);
  const int n_ranks = g.tp, me = g.tp_rank;
  const size_t n = 1000;
  reset_comm_bytes();
  // Sum and max: every rank computes the expectation from every rank's values.
  std::vector<float> x = values(me, n), mx = x;
  allreduce_sum(x.data(), n, g.tp_group);
  allreduce_max(mx.data(), n, g.tp_group);
  for (size_t i = 0; i < n; ++i) {
    float sum = 0.0f, top = -INFINITY;
    for (int r = 0; r < n_ranks; ++r) {
      sum += values(r, n)[i];  // at N = 2 one addition: the order cannot matter
      top = std::max(top, values(r, n)[i]);
    }
    ASSERT_EQ(x[i], sum) << i;
    ASSERT_EQ(mx[i], top) << i;
  }
  // All-gather: rank order.
  const std::vector<float> mine = values(me, n);
  std::vector<float> all(n * static_cast<size_t>(n_ranks), -1.0f);
  allgather_bytes(mine.data(), all.data(), n * sizeof(float), g.tp_group, "allgather_f32");
  for (int r = 0; r < n_ranks; ++r)
    EXPECT_TRUE(std::equal(all.begin() + static_cast<long>(r * n),
                           all.begin() + static_cast<long>((r + 1) * n), values(r, n).begin()));
  // Reduce-scatter: rank r receives the sum of every rank's r-th chunk; in BF16, the sum of
  // the BF16-rounded chunks rounded to BF16.
  const std::vector<float> in = values(me, n * static_cast<size_t>(n_ranks));
  std::vector<float> out(n, -1.0f), out16(n, -1.0f);
  reduce_scatter_sum(in.data(), out.data(), n, g.tp_group);
  reduce_scatter_sum_bf16(in.data(), out16.data(), n, g.tp_group);
  auto bf16 = [](float v) { return decode_ref(encode_ref(v, kBF16Format, false), kBF16Format); };
  for (size_t i = 0; i < n; ++i) {
    float sum = 0.0f, sum16 = 0.0f;
    for (int r = 0; r < n_ranks; ++r) {
      const float v = values(r, n * static_cast<size_t>(n_ranks))[static_cast<size_t>(me) * n + i];
      sum += v;
      sum16 = r == 0 ? bf16(v) : bf16(sum16 + bf16(v));
    }
    ASSERT_EQ(out[i], sum) << i;
    ASSERT_EQ(out16[i], sum16) << i;
  }
  // Bytes under the group's name (nothing moves in a one-rank group).
  const CommBytes& c = comm_bytes();
  if (n_ranks == 1) {
    EXPECT_EQ(c.total_bytes(), 0);
  } else {
    EXPECT_EQ(c.bytes.at("tp.allreduce_f32"), static_cast<int64_t>(n * 4));
    EXPECT_EQ(c.bytes.at("tp.allgather_f32"), static_cast<int64_t>(n * 4 * 2));
    EXPECT_EQ(c.bytes.at("tp.reduce_scatter_f32"), static_cast<int64_t>(n * 4 * 2));
    EXPECT_EQ(c.bytes.at("tp.reduce_scatter_bf16"), static_cast<int64_t>(n * 2 * 2));
    EXPECT_EQ(c.bytes.count("allreduce_f32"), 0u);  // nothing counted as data-parallel
  }
}

}  // namespace
}  // namespace fp8lm::dist
