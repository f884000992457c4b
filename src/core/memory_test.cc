#include "core/memory.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "tensor/tensor.h"

namespace fp8lm {
namespace {

TEST(Memory, CountsCurrentAndPeakPerCategory) {
  mem_reset_peaks();
  const MemStats before = mem_stats(MemCategory::kOptimM1);
  const MemStats total_before = mem_stats_total();
  {
    Buffer a(1000, MemCategory::kOptimM1);
    Buffer b(24, MemCategory::kOptimM1);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
    EXPECT_EQ(mem_stats(MemCategory::kOptimM1).current, before.current + 1024);
    EXPECT_EQ(mem_stats_total().current, total_before.current + 1024);
    Buffer moved = std::move(a);
    EXPECT_EQ(mem_stats(MemCategory::kOptimM1).current, before.current + 1024);
  }
  EXPECT_EQ(mem_stats(MemCategory::kOptimM1).current, before.current);
  EXPECT_EQ(mem_stats(MemCategory::kOptimM1).peak, before.current + 1024);
  mem_reset_peaks();
  EXPECT_EQ(mem_stats(MemCategory::kOptimM1).peak, before.current);
}

TEST(Memory, TensorsAreAccountedByCategory) {
  const int64_t before = mem_stats(MemCategory::kMaster).current;
  Tensor t(DType::kF16, {3, 5}, MemCategory::kMaster);
  EXPECT_EQ(t.bytes(), 30u);
  EXPECT_EQ(mem_stats(MemCategory::kMaster).current, before + 30);
  EXPECT_EQ(mem_category_name(MemCategory::kCommunication), "communication");
}

TEST(Tensor, ShapeAndViews) {
  Tensor t(DType::kE4M3, {2, 3, 4}, MemCategory::kWeights);
  EXPECT_EQ(t.numel(), 24u);
  EXPECT_EQ(t.shape().str(), "[2, 3, 4]");
  const TensorView v = t;
  EXPECT_EQ(v.data, t.data());
  EXPECT_EQ(v.bytes(), 24u);
  const ConstTensorView cv = v;
  EXPECT_EQ(cv.shape, t.shape());
  EXPECT_EQ(Shape{}.numel(), 1);  // a scalar
  EXPECT_THROW((Shape{2, -1}), Error);
  EXPECT_THROW((Shape{1, 2, 3, 4, 5, 6, 7, 8, 9}), Error);
  Shape big{int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_THROW(big.numel(), Error);
}

}  // namespace
}  // namespace fp8lm
