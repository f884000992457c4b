// FP32 and BF16 gradient averaging (distributed/collectives.h) at N = 2 against a local
// expectation (each rank generates both ranks' data), byte accounting, non-finite values
// surviving, and N = 1 leaving the buffers alone.
#include "distributed/collectives.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "distributed/world.h"
#include "numerics/cast_ref.h"

namespace fp8lm::dist {
namespace {

const std::vector<size_t> kSizes = {100000, 1, 0, 777, 4096};
constexpr size_t kBucket = 4096;  // bytes: tensors straddle windows, small ones share

size_t total() {
  size_t n = 0;
  for (size_t s : kSizes) n += s;
  return n;
}

// Rank r's tensors, with an inf and a NaN on rank 1 at fixed places.
std::vector<std::vector<float>> make_f32(int r) {
  std::mt19937 rng(100u + static_cast<uint32_t>(r));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> out;
  for (size_t s : kSizes) {
    std::vector<float> v(s);
    for (float& x : v) x = normal(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 40) - 20);
    out.push_back(std::move(v));
  }
  if (r == 1) {
    out[0][17] = std::numeric_limits<float>::infinity();
    out[3][5] = std::numeric_limits<float>::quiet_NaN();
  }
  return out;
}

std::vector<F32Span> spans(std::vector<std::vector<float>>& tensors) {
  std::vector<F32Span> out;
  for (auto& t : tensors) out.push_back({t.data(), t.size()});
  return out;
}

float bf16_round(float x) {
  return decode_ref(encode_ref(x, kBF16Format, /*saturate=*/false), kBF16Format);
}

// Same value, or both NaN.
bool same(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

enum class Wire { kF32, kBF16 };

void check_mean(Wire wire) {
  const int n = size();
  if (n > 2) GTEST_SKIP() << "exact expectations are for 1 or 2 ranks";
  const std::vector<std::vector<float>> r0 = make_f32(0), r1 = make_f32(1);
  std::vector<std::vector<float>> mine = rank() == 0 ? r0 : r1;
  const std::vector<F32Span> s = spans(mine);
  reset_comm_bytes();
  if (wire == Wire::kF32)
    allreduce_mean_f32(s, kBucket);
  else
    allreduce_mean_bf16(s, kBucket);
  int bad = 0;
  for (size_t t = 0; t < kSizes.size(); ++t)
    for (size_t i = 0; i < kSizes[t]; ++i) {
      float want = r0[t][i];  // N = 1: untouched
      if (n == 2)
        want = wire == Wire::kF32 ? (r0[t][i] + r1[t][i]) * 0.5f
                                  : bf16_round(bf16_round(r0[t][i]) + bf16_round(r1[t][i])) * 0.5f;
      if (!same(mine[t][i], want) && ++bad <= 5)
        ADD_FAILURE() << "tensor " << t << " element " << i << ": want " << want << ", got "
                      << mine[t][i];
    }
  EXPECT_EQ(bad, 0);
  const CommBytes& c = comm_bytes();
  if (n == 1) {
    EXPECT_EQ(c.total_bytes(), 0);
    return;
  }
  EXPECT_TRUE(std::isinf(mine[0][17]));
  EXPECT_TRUE(std::isnan(mine[3][5]));
  const size_t elem = wire == Wire::kF32 ? 4 : 2;
  const char* kind = wire == Wire::kF32 ? "allreduce_f32" : "allreduce_bf16";
  EXPECT_EQ(c.bytes.at(kind), static_cast<int64_t>(elem * total()));
  EXPECT_EQ(c.calls.at(kind), static_cast<int64_t>((elem * total() + kBucket - 1) / kBucket));
  EXPECT_EQ(c.total_bytes(), static_cast<int64_t>(elem * total()));
}

TEST(AllReduceMean, F32) { check_mean(Wire::kF32); }
TEST(AllReduceMean, BF16OnTheWire) { check_mean(Wire::kBF16); }

TEST(AllReduceMean, EmptyListMakesNoCall) {
  reset_comm_bytes();
  allreduce_mean_f32({});
  allreduce_mean_bf16({});
  EXPECT_EQ(comm_bytes().total_bytes(), 0);
}

}  // namespace
}  // namespace fp8lm::dist
