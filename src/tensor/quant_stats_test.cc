// Telemetry statistics against counts and sums worked out by hand on known tensors, per
// tensor and per block; and the probe's collection rules.
#include "tensor/quant_stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cast.h"
#include "core/check.h"
#include "numerics/cast_ref.h"
#include "tensor/scaling.h"

namespace fp8lm {
namespace {

// E4M3 at scale s (stored values x ≈ decode(q)·s): q = cast(x / s).
std::vector<uint8_t> cast(const std::vector<float>& x, float s) {
  std::vector<uint8_t> q(x.size());
  kernels::quantize(q.data(), DType::kE4M3, x.data(), x.size(), 1.0f / s);
  return q;
}

TEST(QuantStats, PerTensorCountsAndErrors) {
  // s = 1: 2^-10 underflows (E4M3's smallest subnormal is 2^-9, the half-way point 2^-10
  // rounds to even = 0); 500 and -1000 are clipped to ±448; 1.0625 rounds to 1 (error 1/16);
  // 0 and the exact values add no error; inf is counted apart.
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {0.0f, 0x1p-10f, 500.0f, -1000.0f, 1.0625f, 2.0f, inf, 0.5f};
  float s = 1.0f;
  const std::vector<uint8_t> q = cast(x, s);
  const QuantStats st =
      quant_stats(x.data(), tensor_view(static_cast<const void*>(q.data()), DType::kE4M3,
                                        {2, 4}, &s));
  EXPECT_EQ(st.n, 8u);
  EXPECT_EQ(st.nonfinite, 1u);
  EXPECT_EQ(st.nonzero, 6u);  // all finite but the 0
  EXPECT_EQ(st.underflow, 1u);
  EXPECT_EQ(st.saturated, 2u);
  EXPECT_EQ(st.amax, 1000.0);
  const double signal = std::pow(0x1p-10, 2) + 500.0 * 500 + 1e6 + std::pow(1.0625, 2) + 4 + 0.25;
  const double error = std::pow(0x1p-10, 2) + 52.0 * 52 + 552.0 * 552 + std::pow(0.0625, 2);
  EXPECT_DOUBLE_EQ(st.signal, signal);
  EXPECT_DOUBLE_EQ(st.error, error);
  EXPECT_DOUBLE_EQ(st.mse(), error / 7);
  EXPECT_DOUBLE_EQ(st.snr_db(), 10 * std::log10(signal / error));
  EXPECT_DOUBLE_EQ(st.underflow_rate(), 1.0 / 6);
  EXPECT_DOUBLE_EQ(st.saturation_rate(), 2.0 / 8);
  EXPECT_EQ(st.scale_min, 1.0f);
  EXPECT_EQ(st.scale_max, 1.0f);
  // The scale moves the range: at s = 4, 1000/4 = 250 fits, 2^-10/4 still underflows.
  s = 4.0f;
  const std::vector<uint8_t> q4 = cast(x, s);
  const QuantStats st4 =
      quant_stats(x.data(), tensor_view(static_cast<const void*>(q4.data()), DType::kE4M3,
                                        {8}, &s));
  EXPECT_EQ(st4.saturated, 0u);
  EXPECT_EQ(st4.underflow, 1u);
}

TEST(QuantStats, BlockScalesAreReadPerElement) {
  // Two 1×128 tiles per row: the first tile's scale makes 0x1p-12 underflow, the second
  // tile (with a small amax) keeps it.
  const size_t rows = 3, cols = 200;
  std::vector<float> x(rows * cols, 0.0f);
  for (size_t r = 0; r < rows; ++r) {
    x[r * cols] = 448.0f;             // tile 0: s = 1
    x[r * cols + 1] = 0x1p-12f;       // underflows in tile 0
    x[r * cols + 128] = 0x1p-12f;     // tile 1: amax 2^-12, exact
  }
  std::vector<uint8_t> q(rows * cols);
  std::vector<float> grid(rows * 2);
  const MutableScaledView v{{q.data(), DType::kE4M3, {int64_t(rows), int64_t(cols)}},
                            ScalingMode::kRows1x128,
                            {grid.data(), DType::kF32, {int64_t(rows), 2}}};
  kernels::quantize_blocks(v, x.data());
  const QuantStats st = quant_stats(x.data(), v);
  EXPECT_EQ(st.nonzero, 3 * rows);
  EXPECT_EQ(st.underflow, rows);
  EXPECT_EQ(st.saturated, 0u);  // block scales never clip
  EXPECT_EQ(st.scale_max, 1.0f);
  EXPECT_EQ(st.scale_min, grid[1]);
  EXPECT_LT(st.scale_min, 1.0f);
}

TEST(QuantStats, ProbeCollectsOnlyWhenArmedAndKeepsTheLastCast) {
  std::vector<float> x = {1.0f, 2.0f};
  float s = 1.0f;
  const std::vector<uint8_t> q = cast(x, s);
  const ScaledView v =
      tensor_view(static_cast<const void*>(q.data()), DType::kE4M3, {2}, &s);
  QuantProbe p;
  p.record("a", "x", x.data(), v);
  EXPECT_TRUE(p.take().empty());
  p.arm(true);
  p.record("a", "x", x.data(), v);
  p.record("b", "x", x.data(), v);
  x[0] = 1.0625f;  // a second micro-batch's cast of the same tensor replaces the first
  p.record("a", "x", x.data(), v);
  const std::vector<QuantRecord> r = p.take();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].tensor, "a");
  EXPECT_GT(r[0].stats.error, 0.0);
  EXPECT_EQ(r[1].tensor, "b");
  EXPECT_TRUE(p.take().empty());
}

// "What if" casts the same values the other way and records both.
TEST(QuantStats, WhatIfRecordsTheOtherCast) {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 1e-4f);
  std::vector<float> x(3 * 300);
  for (float& v : x) v = d(rng);
  float s = 0x1p-14f;
  const std::vector<uint8_t> q = cast(x, s);
  const ScaledView v =
      tensor_view(static_cast<const void*>(q.data()), DType::kE4M3, {3, 300}, &s);
  QuantProbe p;
  p.arm(true);
  p.set_what_if("e5m2");
  p.record("t", "dy", x.data(), v);
  p.set_what_if("1x128");
  p.record("t", "x", x.data(), v);
  const std::vector<QuantRecord> r = p.take();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[1].role, "dy@e5m2");
  EXPECT_EQ(r[1].dtype, DType::kE5M2);
  EXPECT_EQ(r[1].mode, ScalingMode::kTensor);
  ScaledTensor e5(Shape{3, 300}, ScalingRecipe{DType::kE5M2, ScalingTiming::kJustInTime},
                  MemCategory::kWorkspace);
  quantize(e5, x.data());
  const QuantStats want = quant_stats(x.data(), e5.view());
  EXPECT_EQ(r[1].stats.error, want.error);
  EXPECT_EQ(r[1].stats.underflow, want.underflow);
  EXPECT_LT(r[1].stats.snr_db(), r[0].stats.snr_db());  // 2 mantissa bits instead of 3
  EXPECT_EQ(r[3].role, "x@1x128");
  EXPECT_EQ(r[3].dtype, DType::kE4M3);
  EXPECT_EQ(r[3].mode, ScalingMode::kRows1x128);
  EXPECT_GE(r[3].stats.snr_db(), r[2].stats.snr_db());  // finer scales never lose range
  EXPECT_THROW(p.set_what_if("fp4"), Error);
}

}  // namespace
}  // namespace fp8lm
