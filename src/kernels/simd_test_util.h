// GoogleTest fixture that runs a test once per SIMD target the CPU supports, pinning the
// dispatch to that target for the test's duration.
#pragma once

#include <gtest/gtest.h>

#include "kernels/simd.h"

namespace fp8lm {

class OnEveryTarget : public ::testing::TestWithParam<simd::Target> {
 protected:
  void SetUp() override {
    simd::force_target(GetParam().bits);
    ASSERT_EQ(simd::active_target(), GetParam().name);
  }
  void TearDown() override { simd::force_target(0); }
};

}  // namespace fp8lm

// Instantiates fixture `Suite` (derived from OnEveryTarget) for every available target.
#define FP8LM_INSTANTIATE_ON_EVERY_TARGET(Suite)                                       \
  INSTANTIATE_TEST_SUITE_P(AllTargets, Suite,                                          \
                           ::testing::ValuesIn(::fp8lm::simd::available_targets()),  \
                           [](const auto& p) { return p.param.name; })
