// Block-scaled casts against an exact scalar reference, on every SIMD target: 1×128 tiles,
// 128×1 tiles, 128×128 blocks, MX 1×32 with e8m0 scales and one whole-tensor block, for E4M3
// and E5M2, on ragged shapes, with all-zero blocks, values spanning many binades, subnormal
// results, and blocks holding inf or NaN. Outputs are poisoned before each kernel runs.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cast.h"
#include "kernels/simd_test_util.h"
#include "numerics/block_scales.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

// The rule, written independently of block_scale(): the least e in [-126, 126] with
// fmax·2^e ≥ amax, in exact FP64 arithmetic; 1 for an all-zero block; NaN for inf/NaN.
double ref_scale(double amax, double fmax) {
  if (!std::isfinite(amax)) return std::numeric_limits<double>::quiet_NaN();
  if (amax == 0.0) return 1.0;
  int e = -126;
  while (e < 126 && fmax * std::exp2(e) < amax) ++e;
  return std::exp2(e);
}

struct Ref {
  std::vector<uint32_t> codes;
  std::vector<double> scales;
};

Ref ref_quantize(const std::vector<float>& x, size_t rows, size_t cols, BlockShape sh, DType t) {
  const FloatFormat& f = float_format(t);
  const size_t br = sh.rows ? sh.rows : rows, bc = sh.cols ? sh.cols : cols;
  const size_t gr = (rows + br - 1) / br, gc = (cols + bc - 1) / bc;
  Ref out{std::vector<uint32_t>(rows * cols), std::vector<double>(gr * gc)};
  for (size_t g = 0; g < gr; ++g) {
    for (size_t h = 0; h < gc; ++h) {
      double amax = 0.0;
      bool nonfinite = false;
      for (size_t r = g * br; r < std::min(rows, (g + 1) * br); ++r)
        for (size_t c = h * bc; c < std::min(cols, (h + 1) * bc); ++c) {
          const double v = x[r * cols + c];
          nonfinite |= !std::isfinite(v);
          amax = std::max(amax, std::fabs(v));
        }
      const double s = nonfinite ? std::numeric_limits<double>::quiet_NaN()
                                 : ref_scale(amax, info(t).max_finite);
      out.scales[g * gc + h] = s;
      for (size_t r = g * br; r < std::min(rows, (g + 1) * br); ++r)
        for (size_t c = h * bc; c < std::min(cols, (h + 1) * bc); ++c) {
          const double v = x[r * cols + c];
          // x / s is exact in FP64; one rounding to binary32 (as the FPU's product), then
          // the reference cast.
          const float scaled = std::isnan(s) ? static_cast<float>(v) : static_cast<float>(v / s);
          out.codes[r * cols + c] = encode_ref(scaled, f, true);
        }
    }
  }
  return out;
}

// Values over ~60 binades, some blocks all zero, some with inf/NaN, some subnormal.
std::vector<float> hostile_values(size_t rows, size_t cols, std::mt19937& rng, bool nonfinite) {
  std::vector<float> x(rows * cols);
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> binade(-40, 20);
  for (auto& v : x) v = std::ldexp(mant(rng), binade(rng));
  // A zero band (covers whole blocks of every shape tested) and a few tiny values.
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      if (c >= 32 && c < 64 && r < 128) x[r * cols + c] = 0.0f;
      if ((r * cols + c) % 97 == 5) x[r * cols + c] = std::ldexp(1.0f, -140);
    }
  if (nonfinite && x.size() > 300) {
    x[x.size() / 3] = std::numeric_limits<float>::infinity();
    x[x.size() / 2] = -std::numeric_limits<float>::infinity();
    x[x.size() - 1] = std::numeric_limits<float>::quiet_NaN();
  }
  return x;
}

struct Case {
  ScalingMode mode;
  BlockShape shape;
};
std::vector<Case> cases() {
  std::vector<Case> out;
  for (ScalingMode m : {ScalingMode::kRows1x128, ScalingMode::kCols128x1, ScalingMode::kBlock128,
                        ScalingMode::kMx32})
    out.push_back({m, block_shape(m)});
  out.push_back({ScalingMode::kTensor, BlockShape{}});
  out.push_back({ScalingMode::kTensor, BlockShape{0, 0, DType::kE8M0}});
  return out;
}

bool same_scale(double want, float got) {
  return std::isnan(want) ? std::isnan(got) : want == static_cast<double>(got);
}

class BlockCast : public OnEveryTarget {};

TEST_P(BlockCast, MatchesExactReferenceOnRaggedShapes) {
  const size_t shapes[][2] = {{1, 1}, {3, 200}, {130, 257}, {257, 130}, {128, 128}, {5, 31},
                              {64, 1000}, {300, 33}};
  std::mt19937 rng(7);
  for (const Case& cs : cases()) {
    for (DType t : {DType::kE4M3, DType::kE5M2}) {
      for (const auto& s : shapes) {
        for (bool nonfinite : {false, true}) {
          const size_t rows = s[0], cols = s[1];
          SCOPED_TRACE(testing::Message() << scaling_mode_name(cs.mode) << " "
                                          << dtype_name(cs.shape.scale_dtype) << " "
                                          << dtype_name(t) << " " << rows << "x" << cols
                                          << (nonfinite ? " with inf/NaN" : ""));
          const auto x = hostile_values(rows, cols, rng, nonfinite);
          const Ref want = ref_quantize(x, rows, cols, cs.shape, t);
          std::vector<uint8_t> q(rows * cols, 0xA5);
          const size_t es = dtype_size(cs.shape.scale_dtype);
          std::vector<uint8_t> scales(want.scales.size() * es, 0x5A);
          const float amax =
              kernels::quantize_blocks(q.data(), t, x.data(), rows, cols, cs.shape, scales.data());
          size_t bad = 0;
          for (size_t i = 0; i < q.size() && bad < 5; ++i)
            if (q[i] != want.codes[i]) {
              ADD_FAILURE() << "element " << i << " x=" << x[i] << ": got " << int(q[i])
                            << ", want " << want.codes[i];
              ++bad;
            }
          const BlockScales view{scales.data(), cs.shape, 0};
          const size_t gc = grid_extent(cols, cs.shape.cols);
          for (size_t i = 0; i < want.scales.size(); ++i)
            ASSERT_TRUE(same_scale(want.scales[i], block_scale_at(view, gc, i / gc, i % gc)))
                << "block " << i << ": want " << want.scales[i];
          double want_amax = 0.0;
          bool has_nan = false;
          for (float v : x) {
            has_nan |= std::isnan(v);
            want_amax = std::max(want_amax, static_cast<double>(std::fabs(v)));
          }
          if (has_nan) {
            EXPECT_TRUE(std::isnan(amax));
          } else {
            EXPECT_EQ(amax, want_amax);
          }

          // Back to f32: decode(q) · s exactly (NaN blocks dequantize to NaN).
          std::vector<float> back(rows * cols, 12345.0f);
          kernels::dequantize_blocks(back.data(), q.data(), t, rows, cols, view);
          const size_t br = cs.shape.rows ? cs.shape.rows : rows;
          const size_t bc = cs.shape.cols ? cs.shape.cols : cols;
          for (size_t r = 0; r < rows; ++r)
            for (size_t c = 0; c < cols; ++c) {
              const double sc = want.scales[(r / br) * gc + c / bc];
              const double v = decode_ref(want.codes[r * cols + c], float_format(t)) * sc;
              const float got = back[r * cols + c];
              if (std::isnan(v)) {
                ASSERT_TRUE(std::isnan(got)) << r << "," << c;
              } else {
                ASSERT_EQ(static_cast<double>(got), v) << r << "," << c;
              }
            }
        }
      }
    }
  }
}

TEST_P(BlockCast, ScalesKeepEveryBlockInRangeAndAreRoundedUp) {
  // A block max exactly at fmax·2^k keeps s = 2^k; one ulp above doubles it.
  for (DType t : {DType::kE4M3, DType::kE5M2}) {
    const float fmax = static_cast<float>(info(t).max_finite);
    for (int k : {-20, 0, 7}) {
      for (bool above : {false, true}) {
        std::vector<float> x(32, std::ldexp(fmax, k - 3));
        x[3] = std::ldexp(fmax, k);
        if (above) x[3] = std::nextafter(x[3], INFINITY);
        std::vector<uint8_t> q(32, 0);
        float s = 0.0f;
        kernels::quantize_blocks(q.data(), t, x.data(), 1, 32, {1, 32, DType::kF32}, &s);
        EXPECT_EQ(s, std::ldexp(1.0f, above ? k + 1 : k));
        // No overflow: the block max comes back as fmax·2^k (rounded, when above).
        EXPECT_EQ(decode_ref(q[3], float_format(t)) * s, std::ldexp(fmax, k));
      }
    }
  }
  EXPECT_EQ(block_scale(0.0f, 448.0f), 1.0f);
  EXPECT_TRUE(std::isnan(block_scale(INFINITY, 448.0f)));
  EXPECT_EQ(block_scale(1e-45f, 448.0f), std::ldexp(1.0f, -126));  // clamped
  EXPECT_EQ(block_scale(3e38f, 448.0f), std::ldexp(1.0f, 120));
  for (int code = 0; code < 256; ++code) {
    const float v = e8m0_to_float(static_cast<uint8_t>(code));
    if (code == 255) {
      EXPECT_TRUE(std::isnan(v));
    } else {
      EXPECT_EQ(v, std::ldexp(1.0f, code - 127));
    }
    EXPECT_EQ(float_to_e8m0(v), code);
  }
}

FP8LM_INSTANTIATE_ON_EVERY_TARGET(BlockCast);

}  // namespace
}  // namespace fp8lm
