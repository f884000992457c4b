// ScaledView: live scales (a holder sees in-place updates), mutable → read-only conversion,
// layouts inferred from file shapes, and refusals.
#include "tensor/scaled_view.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "core/check.h"

namespace fp8lm {
namespace {

TEST(ScaledView, PerTensorScalesAreLive) {
  std::vector<uint8_t> q(6, 0);
  float s = 0.25f;
  const MutableScaledView w = tensor_view(static_cast<void*>(q.data()), DType::kE4M3, {2, 3}, &s);
  const ScaledView r = w;  // what a reader keeps
  EXPECT_EQ(r.tensor_scale(), 0.25f);
  w.set_tensor_scale(0.5f);  // a collective or the optimizer writes in place
  EXPECT_EQ(s, 0.5f);
  EXPECT_EQ(r.tensor_scale(), 0.5f);
  s = 2.0f;
  EXPECT_EQ(r.tensor_scale(), 2.0f);
  EXPECT_EQ(r.rows(), 2u);
  EXPECT_EQ(r.cols(), 3u);
  EXPECT_EQ(r.blocks().data, nullptr);
  const ScaledView unscaled = tensor_view(static_cast<const void*>(q.data()), DType::kE4M3, {6},
                                          static_cast<const float*>(nullptr));
  EXPECT_EQ(unscaled.mode, ScalingMode::kNone);
  EXPECT_EQ(unscaled.tensor_scale(), 1.0f);
}

TEST(ScaledView, BlockViewsGiveTheirGrid) {
  std::vector<uint8_t> q(300 * 130);
  std::vector<float> grid(3 * 2);
  const MutableScaledView v{{q.data(), DType::kE4M3, {300, 130}},
                            ScalingMode::kBlock128,
                            {grid.data(), DType::kF32, {3, 2}}};
  EXPECT_EQ(scale_grid_shape(v.data.shape, v.mode), (Shape{3, 2}));
  EXPECT_EQ(v.blocks().data, grid.data());
  EXPECT_EQ(v.blocks().shape.rows, 128u);
  EXPECT_THROW(v.set_tensor_scale(1.0f), Error);  // a grid is not one scale
  EXPECT_EQ(scale_grid_shape({300, 130}, ScalingMode::kMx32), (Shape{300, 5}));
  EXPECT_EQ(scale_grid_shape({300, 130}, ScalingMode::kRows1x128), (Shape{300, 2}));
  EXPECT_EQ(scale_grid_shape({300, 130}, ScalingMode::kCols128x1), (Shape{3, 130}));
}

TEST(ScaledView, FileLayoutsAreInferredOrRefused) {
  std::vector<uint8_t> q(300 * 130), e8(300 * 5);
  std::vector<float> f(300 * 2 + 8, 1.0f);
  const ConstTensorView data{q.data(), DType::kE4M3, {300, 130}};
  auto mode_of = [&](ConstTensorView s) { return scaled_view(data, &s, "t").mode; };
  EXPECT_EQ(mode_of({f.data(), DType::kF32, {}}), ScalingMode::kTensor);
  EXPECT_EQ(mode_of({f.data(), DType::kF32, {3, 2}}), ScalingMode::kBlock128);
  EXPECT_EQ(mode_of({f.data(), DType::kF32, {300, 2}}), ScalingMode::kRows1x128);
  EXPECT_EQ(mode_of({e8.data(), DType::kE8M0, {300, 5}}), ScalingMode::kMx32);
  EXPECT_EQ(mode_of({e8.data(), DType::kU8, {300, 5}}), ScalingMode::kMx32);
  EXPECT_EQ(scaled_view(data, nullptr, "t").mode, ScalingMode::kNone);
  EXPECT_THROW(mode_of({f.data(), DType::kF32, {3, 3}}), Error);
  EXPECT_THROW(mode_of({e8.data(), DType::kE8M0, {3, 2}}), Error);
  f[0] = 0.0f;
  EXPECT_THROW(mode_of({f.data(), DType::kF32, {1}}), Error);  // a scale must be > 0
}

}  // namespace
}  // namespace fp8lm
