// The AdamW kernels' pass 1 (amaxes of the new states) against pass 2 (the states it stores):
// with FP32 states pass 2 stores every new value exactly, so the amaxes pass 1 reports must be
// the bits of the largest stored magnitudes, NaN included: the update deciding the maximum, a
// record in every vector, non-finite, negative and subnormal second moments, ε = 0, and
// lengths with a vector tail.
#include "kernels/adamw.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/simd_test_util.h"

namespace fp8lm {
namespace {

struct States {
  std::vector<float> master, m1, m2, grad;
};

States random_states(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> w(0.0f, 0.02f), m(0.0f, 1e-3f), g(0.0f, 1e-3f);
  States s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n),
           std::vector<float>(n)};
  for (size_t i = 0; i < n; ++i) {
    s.master[i] = w(rng);
    s.m1[i] = m(rng);
    s.m2[i] = std::fabs(g(rng) * g(rng)) + 1e-9f;
    s.grad[i] = g(rng);
  }
  return s;
}

kernels::AdamWArgs args(float lr, float eps, float decay) {
  return {lr, 0.9f, 0.95f, eps, decay, 1.0f - 0.9f * 0.9f, 1.0f - 0.95f * 0.95f, 1.0f};
}

uint32_t abs_bits(float x) { return std::bit_cast<uint32_t>(x) & 0x7FFFFFFFu; }

// Pass 1's amaxes must be the largest magnitudes (as bits, NaN above everything) pass 2 stores.
void expect_pass1_matches_pass2(States s, const kernels::AdamWArgs& a, const char* what) {
  const Shape shape{static_cast<int64_t>(s.master.size())};
  const float one = 1.0f;
  auto view = [&](std::vector<float>& v) {
    return tensor_view(v.data(), DType::kF32, shape, nullptr);
  };
  const ScaledView grad =
      tensor_view(static_cast<const void*>(s.grad.data()), DType::kF32, shape, &one);
  const kernels::AdamWScales amax =
      kernels::adamw_amax(view(s.master), view(s.m1), view(s.m2), grad, a);
  kernels::adamw_apply(view(s.master), view(s.m1), view(s.m2), grad, a, {1.0f, 1.0f, 1.0f});
  uint32_t want[3] = {0, 0, 0};
  const std::vector<float>* stored[3] = {&s.master, &s.m1, &s.m2};
  for (int k = 0; k < 3; ++k)
    for (float x : *stored[k]) want[k] = std::max(want[k], abs_bits(x));
  EXPECT_EQ(std::bit_cast<uint32_t>(amax.master), want[0]) << what << ": master";
  EXPECT_EQ(std::bit_cast<uint32_t>(amax.m1), want[1]) << what << ": m1";
  EXPECT_EQ(std::bit_cast<uint32_t>(amax.m2), want[2]) << what << ": m2";
}

class AdamWKernelOnTarget : public OnEveryTarget {};

TEST_P(AdamWKernelOnTarget, Pass1AmaxIsTheLargestStoredValue) {
  const size_t n = 100'003;  // several parallel chunks and a vector tail
  expect_pass1_matches_pass2(random_states(n, 1), args(1e-3f, 1e-8f, 1e-4f), "random");

  // Every |θ0| equal: the update alone decides the maximum, far above θ0's.
  States flat = random_states(n, 2);
  for (size_t i = 0; i < n; ++i) flat.master[i] = (i % 3) ? 1.0f : -1.0f;
  expect_pass1_matches_pass2(flat, args(0.1f, 1e-8f, 0.0f), "update decides");

  // Growing magnitudes: a new record in every vector (nothing can be skipped).
  States grow = random_states(n, 3);
  for (size_t i = 0; i < n; ++i) grow.master[i] = 1e-3f * static_cast<float>(i + 1);
  expect_pass1_matches_pass2(grow, args(1e-3f, 1e-8f, 0.0f), "growing");
}

TEST_P(AdamWKernelOnTarget, Pass1AmaxWithSpecialSecondMoments) {
  const size_t n = 4099;
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char* what;
    float v;
    float eps;
  } cases[] = {{"zero v, eps 0", 0.0f, 0.0f},
               {"NaN v", std::numeric_limits<float>::quiet_NaN(), 1e-8f},
               {"negative v", -1e-6f, 1e-8f},
               {"subnormal v", 1e-40f, 1e-30f},
               {"v overflowing v-hat", 3e38f, 1e-8f},
               {"infinite v", inf, 1e-8f}};
  for (const Case& c : cases) {
    for (size_t at : {size_t{0}, size_t{1234}, n - 1}) {
      for (float m : {1.0f, 0.0f}) {  // a large update, or none, where v is special
        States s = random_states(n, 5);
        s.m2[at] = c.v;
        s.grad[at] = 0.0f;
        s.m1[at] = m;
        s.master[at] = 1e-6f;  // a small θ0 there, so only the update can make a record
        expect_pass1_matches_pass2(s, args(1e-3f, c.eps, 0.0f), c.what);
      }
    }
  }
  States s = random_states(n, 6);
  s.master[77] = inf;
  expect_pass1_matches_pass2(s, args(1e-3f, 1e-8f, 0.0f), "infinite master");
}

FP8LM_INSTANTIATE_ON_EVERY_TARGET(AdamWKernelOnTarget);

}  // namespace
}  // namespace fp8lm
