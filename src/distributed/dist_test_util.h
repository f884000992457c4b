// Shared by the distributed/ tests: deterministic per-rank FP8 gradients (every rank can generate
// every rank's data, so each computes the exact expected result locally) and that
// expectation, built on the scalar reference codec rather than the SIMD kernels.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "distributed/collectives.h"
#include "numerics/cast_ref.h"

namespace fp8lm::dist::test {

inline constexpr uint8_t kPoison = 0xA5;

struct HostFp8 {
  std::vector<uint8_t> codes;
  float scale_inv = 1.0f;
};

// Rank r's tensors: codes of N(0, sigma) samples (sigma per tensor, so some tensors reach
// ±448), scale_inv = 2^-(4 + (r + 2t) mod 5), so ranks' scales differ.
inline std::vector<HostFp8> make_fp8(int r, std::span<const size_t> sizes, uint32_t seed) {
  std::mt19937 rng(seed * 7919u + static_cast<uint32_t>(r));
  std::vector<HostFp8> out(sizes.size());
  for (size_t t = 0; t < sizes.size(); ++t) {
    std::normal_distribution<float> normal(0.0f, 10.0f + 30.0f * static_cast<float>(t % 4));
    out[t].codes.resize(sizes[t]);
    for (uint8_t& c : out[t].codes) c = to_e4m3_ref(normal(rng));
    out[t].scale_inv = 1.0f / static_cast<float>(1 << (4 + (r + 2 * static_cast<int>(t)) % 5));
  }
  return out;
}

// Live views of the tensors: collectives write codes and scale_inv in place.
inline std::vector<MutableScaledView> spans(std::vector<HostFp8>& tensors) {
  std::vector<MutableScaledView> out;
  for (HostFp8& t : tensors)
    out.push_back(tensor_view(static_cast<void*>(t.codes.data()), DType::kE4M3,
                              Shape{static_cast<int64_t>(t.codes.size())}, &t.scale_inv));
  return out;
}

inline uint8_t e4m3_sum_ref(uint8_t a, uint8_t b) {
  return to_e4m3_ref(static_cast<float>(static_cast<double>(from_e4m3_ref(a)) +
                                        static_cast<double>(from_e4m3_ref(b))));
}

// The FP8 average of two ranks' tensors (all[r][t]) with multiplier m, as docs/numerics.md
// defines it: shared scale s_g = min of 1/scale_inv, codes requantized by
// float(s_g·m·scale_inv), summed in E4M3, scale_inv = 1/(s_g·m·2).
inline std::vector<HostFp8> expected_fp8_mean2(const std::vector<std::vector<HostFp8>>& all,
                                               float m) {
  std::vector<HostFp8> out(all[0].size());
  for (size_t t = 0; t < out.size(); ++t) {
    const float sg = std::min(1.0f / all[0][t].scale_inv, 1.0f / all[1][t].scale_inv);
    const double s = static_cast<double>(sg) * m;
    const float f0 = static_cast<float>(s * all[0][t].scale_inv);
    const float f1 = static_cast<float>(s * all[1][t].scale_inv);
    out[t].scale_inv = static_cast<float>(1.0 / (s * 2.0));
    out[t].codes.resize(all[0][t].codes.size());
    for (size_t i = 0; i < out[t].codes.size(); ++i)
      out[t].codes[i] = e4m3_sum_ref(to_e4m3_ref(from_e4m3_ref(all[0][t].codes[i]) * f0),
                                     to_e4m3_ref(from_e4m3_ref(all[1][t].codes[i]) * f1));
  }
  return out;
}

// Codes equal (any NaN code matches any NaN code); reports the first few differences.
inline void expect_codes_eq(std::span<const uint8_t> got, std::span<const uint8_t> want,
                            const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const bool nan = (want[i] & 0x7F) == 0x7F;
    const bool ok = nan ? (got[i] & 0x7F) == 0x7F : got[i] == want[i];
    if (!ok && ++bad <= 5)
      ADD_FAILURE() << what << " element " << i << ": want 0x" << std::hex << int{want[i]}
                    << ", got 0x" << int{got[i]};
  }
  EXPECT_EQ(bad, 0) << what;
}

}  // namespace fp8lm::dist::test
