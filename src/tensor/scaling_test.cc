#include "tensor/scaling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

TEST(ComputeScale, PowerOfTwoRule) {
  // e = floor(log2(fmax / amax)) - margin
  EXPECT_EQ(*compute_scale(1.0f, 448.0f, 0, true), 256.0f);     // log2(448) = 8.8
  EXPECT_EQ(*compute_scale(448.0f, 448.0f, 0, true), 1.0f);
  EXPECT_EQ(*compute_scale(449.0f, 448.0f, 0, true), 0.5f);
  EXPECT_EQ(*compute_scale(224.0f, 448.0f, 0, true), 2.0f);     // exactly 2^1
  EXPECT_EQ(*compute_scale(std::nextafter(224.0f, 1e9f), 448.0f, 0, true), 1.0f);
  EXPECT_EQ(*compute_scale(1.0f, 448.0f, 2, true), 64.0f);
  EXPECT_EQ(*compute_scale(1.0f, 57344.0f, 0, true), 32768.0f);
  // Never overflows or underflows: clamped to [2^-126, 2^126].
  EXPECT_EQ(*compute_scale(std::numeric_limits<float>::denorm_min(), 448.0f, 0, true),
            std::ldexp(1.0f, 126));
  EXPECT_EQ(*compute_scale(std::numeric_limits<float>::max(), 448.0f, 0, true),
            std::ldexp(1.0f, -120));
  EXPECT_FALSE(compute_scale(0.0f, 448.0f, 0, true));
  EXPECT_FALSE(compute_scale(std::numeric_limits<float>::infinity(), 448.0f, 0, true));
  EXPECT_FALSE(compute_scale(std::numeric_limits<float>::quiet_NaN(), 448.0f, 0, true));
}

TEST(ComputeScale, PowerOfTwoIsExactFloorOverManyAmaxes) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> lg(-40.0, 40.0);
  for (int i = 0; i < 100000; ++i) {
    const float amax = static_cast<float>(std::exp2(lg(rng)));
    const float s = *compute_scale(amax, 448.0f, 0, true);
    // amax · s fits under fmax, amax · 2s does not (exact in double).
    EXPECT_LE(static_cast<double>(amax) * s, 448.0);
    EXPECT_GT(static_cast<double>(amax) * s * 2, 448.0);
  }
}

TEST(ComputeScale, TransformerEngineStyle) {
  EXPECT_FLOAT_EQ(*compute_scale(2.0f, 448.0f, 0, false), 224.0f);
  EXPECT_FLOAT_EQ(*compute_scale(2.0f, 448.0f, 1, false), 112.0f);
}

TEST(ScalingMeta, DelayedFallsBackToJitUntilHistoryIsFull) {
  ScalingRecipe r;
  r.timing = ScalingTiming::kDelayed;
  r.window = 3;
  ScalingMeta m(r);
  EXPECT_TRUE(m.needs_jit());
  m.record_amax(1.0f);
  m.record_amax(4.0f);
  EXPECT_TRUE(m.needs_jit());
  m.record_amax(2.0f);
  EXPECT_FALSE(m.needs_jit());
  m.set_scale_from_history();  // max over history = 4 → 2^floor(log2(112)) = 64
  EXPECT_EQ(m.scale, 64.0f);
  EXPECT_EQ(m.scale_inv, 1.0f / 64);
  m.record_amax(0.5f);  // rolls out 1.0; max still 4
  m.record_amax(0.5f);  // rolls out 4.0
  EXPECT_EQ(m.history_max(), 2.0f);
  EXPECT_EQ(m.counter, 5);
}

TEST(ScalingMeta, NonFiniteAndZeroAmaxKeepTheScaleAndAreCounted) {
  ScalingRecipe r;
  r.timing = ScalingTiming::kDelayed;
  r.window = 2;
  ScalingMeta m(r);
  m.record_amax(1.0f);
  m.record_amax(1.0f);
  m.set_scale_from_history();
  const float s = m.scale;
  m.record_amax(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(m.nonfinite_amax, 1);
  EXPECT_TRUE(m.needs_jit());        // next cast measures amax first
  EXPECT_EQ(m.history_max(), 1.0f);  // the NaN never entered the history
  m.set_scale_from_amax(std::numeric_limits<float>::infinity());
  EXPECT_EQ(m.scale, s);
  m.set_scale_from_amax(0.0f);
  EXPECT_EQ(m.scale, s);
  m.record_amax(0.0f);
  EXPECT_EQ(m.zero_amax, 1);
  EXPECT_FALSE(m.needs_jit());
}

TEST(ScaledTensor, QuantizeJitAndDelayed) {
  std::vector<float> x(1000);
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.0f, 0.01f);
  for (float& v : x) v = d(rng);
  ScalingRecipe r;
  r.timing = ScalingTiming::kDelayed;
  r.window = 2;
  ScaledTensor t({10, 100}, r, MemCategory::kActivations);
  const float a = quantize(t, x.data());
  EXPECT_GT(a, 0.0f);
  EXPECT_EQ(t.meta.scale, *compute_scale(a, 448.0f, 0, true));  // JIT while history fills
  std::vector<float> back(1000);
  dequantize(back.data(), t);
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(back[i], from_e4m3_ref(to_e4m3_ref(x[i] * t.meta.scale)) * t.meta.scale_inv);
  // Second and third casts: the third uses the history (amax of casts 1 and 2).
  for (float& v : x) v *= 4.0f;
  quantize(t, x.data());
  EXPECT_EQ(t.meta.scale, *compute_scale(4 * a, 448.0f, 0, true));
  for (float& v : x) v *= 100.0f;  // a jump: delayed scaling saturates this step
  const float a3 = quantize(t, x.data());
  EXPECT_EQ(t.meta.scale, *compute_scale(4 * a, 448.0f, 0, true));
  EXPECT_EQ(a3, 400 * a);
  EXPECT_EQ(t.meta.counter, 3);
}

// A just-in-time cast given src's amax (the GEMM that wrote src took it) uses that amax instead
// of a pass of its own: the same payload and scale for the true amax, the given one's scale
// otherwise.
TEST(ScaledTensor, QuantizeJitTakesAKnownAmax) {
  std::vector<float> x(1000);
  std::mt19937 rng(6);
  std::normal_distribution<float> d(0.0f, 0.3f);
  for (float& v : x) v = d(rng);
  ScalingRecipe r;  // E4M3, just-in-time
  ScaledTensor scanned({10, 100}, r, MemCategory::kActivations);
  ScaledTensor given({10, 100}, r, MemCategory::kActivations);
  const float a = quantize(scanned, x.data());
  EXPECT_EQ(quantize(given, x.data(), {}, &a), a);
  EXPECT_EQ(given.meta.scale, scanned.meta.scale);
  EXPECT_EQ(std::memcmp(given.data.data(), scanned.data.data(), x.size()), 0);
  const float twice = 2 * a;
  EXPECT_EQ(quantize(given, x.data(), {}, &twice), twice);
  EXPECT_EQ(given.meta.scale, *compute_scale(twice, 448.0f, 0, true));
  EXPECT_EQ(given.meta.scale, scanned.meta.scale / 2);
}

TEST(ScalingMeta, RejectsBadRecipes) {
  ScalingRecipe r;
  r.format = DType::kI32;  // not a float format (BF16 is taken: an unscaled optimizer state)
  EXPECT_THROW(ScalingMeta{r}, Error);
  r.format = DType::kE8M0;
  EXPECT_THROW(ScalingMeta{r}, Error);
  r.format = DType::kE5M2;
  r.window = 0;
  EXPECT_THROW(ScalingMeta{r}, Error);
}

}  // namespace
}  // namespace fp8lm
