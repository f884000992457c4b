// The GEMM with block-scaled operands (1×128 / 128×1 tiles, 128×128 blocks, MX 1×32 with e8m0
// scales) against FP64 products of the exactly dequantized operands, on every SIMD target:
// both transposes, ragged shapes, K split into passes that cut blocks, NaN-poisoned output.
// Bound, per element: |ŷ − y| ≤ (K + 4)·u·Σ_k |a_ik·b_kj| with u = 2^-24 — the block scales are
// powers of two applied exactly while packing, so only the FP32 accumulation errs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/check.h"
#include "kernels/cast.h"
#include "kernels/gemm.h"
#include "kernels/simd_test_util.h"
#include "numerics/block_scales.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

struct BlockMat {
  size_t rows, cols;
  DType t;
  BlockShape shape;
  std::vector<uint8_t> q, scales;
  std::vector<double> value;  // exact dequantized values

  double at(size_t r, size_t c) const { return value[r * cols + c]; }
};

// Rows and columns of very different magnitudes, so one scale per tensor would lose them.
BlockMat make(size_t rows, size_t cols, DType t, BlockShape shape, std::mt19937& rng) {
  BlockMat m{rows, cols, t, shape, {}, {}, {}};
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(rows * cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c)
      x[r * cols + c] = std::ldexp(d(rng), static_cast<int>((r * 7 + c / 40) % 23) - 11);
  const size_t grid = grid_extent(rows, shape.rows) * grid_extent(cols, shape.cols);
  m.q.assign(rows * cols, 0);
  m.scales.assign(grid * dtype_size(shape.scale_dtype), 0);
  kernels::quantize_blocks(m.q.data(), t, x.data(), rows, cols, shape, m.scales.data());
  const BlockScales view{m.scales.data(), shape, 0};
  const size_t br = shape.rows ? shape.rows : rows, bc = shape.cols ? shape.cols : cols;
  const size_t gc = grid_extent(cols, shape.cols);
  m.value.resize(rows * cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c)
      m.value[r * cols + c] = decode_ref(m.q[r * cols + c], float_format(t)) *
                              static_cast<double>(block_scale_at(view, gc, r / br, c / bc));
  return m;
}

// A block shape "along K" for an operand, in stored coordinates.
BlockShape along_k(ScalingMode m, bool k_is_stored_cols) {
  BlockShape s = block_shape(m);
  if (!k_is_stored_cols) std::swap(s.rows, s.cols);
  return s;
}

class GemmBlocks : public OnEveryTarget {};

TEST_P(GemmBlocks, MatchesFp64WithinTheAccumulationBound) {
  std::mt19937 rng(11);
  const size_t shapes[][3] = {{37, 70, 300}, {1, 1, 1}, {130, 129, 257}, {64, 96, 1000}, {5, 300, 128}};
  const ScalingMode a_modes[] = {ScalingMode::kRows1x128, ScalingMode::kMx32, ScalingMode::kBlock128};
  const ScalingMode b_modes[] = {ScalingMode::kBlock128, ScalingMode::kRows1x128, ScalingMode::kMx32};
  for (const auto& s : shapes) {
    const size_t M = s[0], N = s[1], K = s[2];
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (ScalingMode am : a_modes)
          for (ScalingMode bm : b_modes) {
            const DType at = DType::kE4M3, bt = am == ScalingMode::kMx32 ? DType::kE5M2 : DType::kE4M3;
            SCOPED_TRACE(testing::Message() << M << "x" << N << "x" << K << " ta=" << ta << " tb=" << tb
                                            << " A " << scaling_mode_name(am) << " B "
                                            << scaling_mode_name(bm));
            // A stored M×K (K along columns) or K×M; B stored K×N or N×K (K along columns).
            const BlockMat A = ta ? make(K, M, at, along_k(am, false), rng)
                                  : make(M, K, at, along_k(am, true), rng);
            const BlockMat B = tb ? make(N, K, bt, along_k(bm, true), rng)
                                  : make(K, N, bt, along_k(bm, false), rng);
            std::vector<float> c(M * N, std::numeric_limits<float>::quiet_NaN());
            kernels::GemmOperand a{A.q.data(), at, ta};
            a.blocks = {A.scales.data(), A.shape, 0};
            kernels::GemmOperand b{B.q.data(), bt, tb};
            b.blocks = {B.scales.data(), B.shape, 0};
            kernels::gemm(M, N, K, 1.0f, a, b, 0.0f, {c.data(), DType::kF32});
            int bad = 0;
            for (size_t i = 0; i < M; ++i)
              for (size_t j = 0; j < N; ++j) {
                double y = 0, y_abs = 0;
                for (size_t k = 0; k < K; ++k) {
                  const double p = (ta ? A.at(k, i) : A.at(i, k)) * (tb ? B.at(j, k) : B.at(k, j));
                  y += p;
                  y_abs += std::fabs(p);
                }
                const double tol = (K + 4) * 0x1p-24 * y_abs + 1e-300;
                if (!(std::fabs(c[i * N + j] - y) <= tol) && ++bad <= 3)
                  ADD_FAILURE() << "C[" << i << "," << j << "] = " << c[i * N + j] << ", want " << y
                                << " ± " << tol;
              }
            ASSERT_EQ(bad, 0);
          }
  }
}

TEST_P(GemmBlocks, ScaleGridStrideAndBadGridsAreChecked) {
  std::mt19937 rng(3);
  const BlockMat A = make(8, 256, DType::kE4M3, block_shape(ScalingMode::kRows1x128), rng);
  const BlockMat B = make(256, 16, DType::kE4M3, block_shape(ScalingMode::kBlock128), rng);
  // The same grid with a padded stride gives the same product.
  std::vector<float> padded(8 * 3, 999.0f);
  const auto* sa = reinterpret_cast<const float*>(A.scales.data());
  for (size_t r = 0; r < 8; ++r)
    for (size_t g = 0; g < 2; ++g) padded[r * 3 + g] = sa[r * 2 + g];
  kernels::GemmOperand a{A.q.data(), DType::kE4M3};
  kernels::GemmOperand b{B.q.data(), DType::kE4M3};
  b.blocks = {B.scales.data(), B.shape, 0};
  std::vector<float> c1(8 * 16), c2(8 * 16);
  a.blocks = {A.scales.data(), A.shape, 0};
  kernels::gemm(8, 16, 256, 1.0f, a, b, 0.0f, {c1.data(), DType::kF32});
  a.blocks = {padded.data(), A.shape, 3};
  kernels::gemm(8, 16, 256, 1.0f, a, b, 0.0f, {c2.data(), DType::kF32});
  EXPECT_EQ(c1, c2);
  a.blocks.ld = 1;  // narrower than the grid
  EXPECT_THROW(kernels::gemm(8, 16, 256, 1.0f, a, b, 0.0f, {c2.data(), DType::kF32}), Error);
  a.blocks = {A.scales.data(), A.shape, 0};
  a.cast_to = DType::kE4M3;  // block scales and a cast on the fly do not mix
  EXPECT_THROW(kernels::gemm(8, 16, 256, 1.0f, a, b, 0.0f, {c2.data(), DType::kF32}), Error);
}

FP8LM_INSTANTIATE_ON_EVERY_TARGET(GemmBlocks);

}  // namespace
}  // namespace fp8lm
