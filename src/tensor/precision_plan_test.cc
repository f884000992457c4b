// The precision plan's tables are consistent: what each level stores and sends, and what each
// recipe asks of the GEMMs and of O3's weight replicas.
#include "tensor/precision_plan.h"

#include <gtest/gtest.h>

#include "core/check.h"

namespace fp8lm {
namespace {

bool is_block(ScalingMode m) { return m != ScalingMode::kNone && m != ScalingMode::kTensor; }

TEST(PrecisionPlan, LevelsStoreAndSendWhatTheyCompute) {
  for (PrecisionLevel l : {PrecisionLevel::kFP32, PrecisionLevel::kBF16, PrecisionLevel::kO1,
                           PrecisionLevel::kO2, PrecisionLevel::kO3}) {
    const LevelPlan& p = level_plan(l);
    EXPECT_EQ(level_from_name(p.name), l);
    EXPECT_EQ(p.sharded, l == PrecisionLevel::kO3) << p.name;
    // FP8 levels keep E4M3 gradients and send them as such; the others send their own width.
    const bool fp8 = p.compute == ComputeMode::kFP8;
    EXPECT_EQ(p.states.grad == DType::kE4M3, fp8) << p.name;
    EXPECT_EQ(p.grad_wire == DType::kE4M3, fp8) << p.name;
    EXPECT_EQ(p.states.master == DType::kF16, fp8) << p.name;
  }
  EXPECT_EQ(level_plan(PrecisionLevel::kO2).states.m1, DType::kE4M3);
  EXPECT_EQ(level_plan(PrecisionLevel::kO3).states.m2, level_plan(PrecisionLevel::kO2).states.m2);
  EXPECT_THROW(level_from_name("O4"), Error);
}

TEST(PrecisionPlan, RecipesNameABlockModeForEveryOperandOrNone) {
  for (std::string_view name : {"delayed", "jit", "block", "mxfp8"}) {
    const RecipePlan& r = recipe_plan(name);
    EXPECT_EQ(r.name, name);
    const ScalingMode ops[] = {r.x_fwd, r.x_wgrad, r.w_fwd, r.w_dgrad, r.dy_dgrad, r.dy_wgrad};
    for (ScalingMode m : ops)
      EXPECT_EQ(is_block(m), r.fine != FineScaling::kNone) << name;
    // O3 replicas: a per-tensor E4M3 copy for per-tensor recipes; a block copy only when both
    // of W's GEMMs read W in exactly those blocks (Linear then uses it as it is).
    if (r.fine == FineScaling::kNone) {
      EXPECT_EQ(r.weight_replica, ScalingMode::kTensor) << name;
    } else if (is_block(r.weight_replica)) {
      EXPECT_EQ(r.weight_replica, r.w_fwd) << name;
      EXPECT_EQ(r.weight_replica, r.w_dgrad) << name;
    } else {
      EXPECT_EQ(r.weight_replica, ScalingMode::kNone) << name;
      EXPECT_NE(r.w_fwd, r.w_dgrad) << name << ": one block copy would serve both GEMMs";
    }
  }
  EXPECT_EQ(recipe_plan("block").weight_replica, ScalingMode::kBlock128);
  EXPECT_THROW(recipe_plan("fp4"), Error);
}

}  // namespace
}  // namespace fp8lm
