#include "tensor/precision_plan.h"

#include "core/check.h"

namespace fp8lm {
namespace {

constexpr DType F32 = DType::kF32, F16 = DType::kF16, BF16 = DType::kBF16, E4M3 = DType::kE4M3;

//  level       name    GEMMs               master m1    m2   grad   wire   sharded
constexpr LevelPlan kLevels[] = {
    {PrecisionLevel::kFP32, "fp32", ComputeMode::kF32, {F32, F32, F32, F32}, F32, false},
    {PrecisionLevel::kBF16, "bf16", ComputeMode::kBF16, {F32, F32, F32, F32}, BF16, false},
    {PrecisionLevel::kO1, "O1", ComputeMode::kFP8, {F16, F32, F32, E4M3}, E4M3, false},
    {PrecisionLevel::kO2, "O2", ComputeMode::kFP8, {F16, E4M3, F16, E4M3}, E4M3, false},
    {PrecisionLevel::kO3, "O3", ComputeMode::kFP8, {F16, E4M3, F16, E4M3}, E4M3, true},
};

constexpr ScalingMode kNo = ScalingMode::kNone;
constexpr RecipePlan kRecipes[] = {
    {"delayed", ScalingTiming::kDelayed, FineScaling::kNone, kNo, kNo, kNo, kNo, kNo, kNo,
     DType::kE5M2, ScalingMode::kTensor},
    {"jit", ScalingTiming::kJustInTime, FineScaling::kNone, kNo, kNo, kNo, kNo, kNo, kNo,
     DType::kE5M2, ScalingMode::kTensor},
    // DeepSeek-V3: E4M3 everywhere, 1×128 tiles along K, 128×128 weight blocks.
    {"block", ScalingTiming::kJustInTime, FineScaling::kBlock, ScalingMode::kRows1x128,
     ScalingMode::kCols128x1, ScalingMode::kBlock128, ScalingMode::kBlock128,
     ScalingMode::kRows1x128, ScalingMode::kCols128x1, E4M3, ScalingMode::kBlock128},
    // OCP MXFP8: 32 elements along K share an e8m0 scale; W needs both orientations.
    {"mxfp8", ScalingTiming::kJustInTime, FineScaling::kMx, ScalingMode::kMx32,
     ScalingMode::kMx32x1, ScalingMode::kMx32x1, ScalingMode::kMx32, ScalingMode::kMx32,
     ScalingMode::kMx32x1, E4M3, kNo},
};

}  // namespace

std::string_view compute_mode_name(ComputeMode m) {
  return m == ComputeMode::kF32 ? "fp32" : m == ComputeMode::kBF16 ? "bf16" : "fp8";
}

const LevelPlan& level_plan(PrecisionLevel l) { return kLevels[static_cast<int>(l)]; }
std::string_view level_name(PrecisionLevel l) { return level_plan(l).name; }

PrecisionLevel level_from_name(std::string_view name) {
  for (const LevelPlan& p : kLevels)
    if (p.name == name) return p.level;
  fail("unknown precision level '", name, "' (known: fp32, bf16, O1, O2, O3)");
}

std::string recipe_names() {
  std::string out;
  const size_t n = std::size(kRecipes);
  for (size_t i = 0; i < n; ++i)
    out += std::string(i == 0 ? "" : i + 1 == n ? " or " : ", ") + std::string(kRecipes[i].name);
  return out;
}

const RecipePlan& recipe_plan(std::string_view name) {
  for (const RecipePlan& r : kRecipes)
    if (r.name == name) return r;
  fail("unknown FP8 recipe '", name, "' (known: ", recipe_names(), ")");
}

}  // namespace fp8lm
