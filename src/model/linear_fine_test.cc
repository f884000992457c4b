// The fp8 Linear under fine-grained scaling (block, mx) against an exact reference: the
// operands quantized by the block-cast kernels in the layouts the recipe prescribes (x and dy
// tiled along the reduction dimension of each GEMM, W in 128×128 blocks or MX blocks along K),
// multiplied in FP64. Forward y and dgrad dx must agree within the FP32 accumulation bound;
// a wrongly oriented tile would miss it by orders of magnitude. Shapes are ragged (not
// multiples of 128 or 32), and rows and columns span many binades.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cast.h"
#include "model/linear.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

// Exact values of src [r, c] quantized to t in block mode m.
std::vector<double> ref_values(const std::vector<float>& src, size_t r, size_t c, DType t,
                               ScalingMode m) {
  const BlockShape sh = block_shape(m);
  std::vector<uint8_t> q(r * c);
  std::vector<uint8_t> s(4 * grid_extent(r, sh.rows) * grid_extent(c, sh.cols));
  kernels::quantize_blocks(q.data(), t, src.data(), r, c, sh, s.data());
  const BlockScales view{s.data(), sh, 0};
  const size_t gc = grid_extent(c, sh.cols);
  std::vector<double> v(r * c);
  for (size_t i = 0; i < r; ++i)
    for (size_t j = 0; j < c; ++j)
      v[i * c + j] = decode_ref(q[i * c + j], float_format(t)) *
                     static_cast<double>(block_scale_at(view, gc, i / sh.rows, j / sh.cols));
  return v;
}

std::vector<float> wide_values(size_t r, size_t c, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(r * c);
  for (size_t i = 0; i < r; ++i)
    for (size_t j = 0; j < c; ++j) v[i * c + j] = std::ldexp(d(rng), static_cast<int>((i + 3 * j) % 9) - 4);
  return v;
}

// The layouts are spelled out here, independently of the precision plan's table.
struct FineCase {
  const char* recipe;
  const char* grad_format;
  DType grad;
  ScalingMode x_fwd, w_fwd, dy_dgrad, w_dgrad;
};

class LinearFine : public ::testing::TestWithParam<FineCase> {};

TEST_P(LinearFine, ForwardAndDgradMatchExactReference) {
  const FineCase& fc = GetParam();
  const size_t rows = 70, in = 200, out = 150;
  std::mt19937 rng(9);
  const std::vector<float> x = wide_values(rows, in, rng), w = wide_values(in, out, rng),
                           dy = wide_values(rows, out, rng);
  std::vector<float> wsw(in * out);
  std::vector<uint8_t> dy8(rows * out), w8(in * out), dyt8(rows * out);
  std::vector<uint8_t> w8s(linear_grid_bytes(in, out)), dys(linear_grid_bytes(rows, out)),
      dyts(linear_grid_bytes(rows, out));
  const LinearWorkspace ws{wsw.data(), dy8.data(), w8.data(), w8s.data(),
                           dyt8.data(), dys.data(), dyts.data()};
  const Fp8Options o = fp8_options(fc.recipe, 16, 0, fc.grad_format);
  Linear lin(ComputeMode::kFP8, in, out, rows, ws, o);
  lin.prepare_weight(tensor_view(static_cast<const void*>(w.data()), DType::kF32,
                                 Shape{static_cast<int64_t>(in), static_cast<int64_t>(out)},
                                 nullptr));
  std::vector<float> scratch(rows * in);
  float* xin = lin.input_buffer(scratch.data());
  std::copy(x.begin(), x.end(), xin);
  lin.commit_input(xin);
  std::vector<float> y(rows * out, NAN), dx(rows * in, NAN), dbias(out);
  lin.forward(y.data(), DType::kF32, nullptr);
  ScaledTensor dw = lin.make_grad();
  lin.backward(dx.data(), dy.data(), dw, dbias.data(), false);

  auto check = [](const std::vector<float>& got, const std::vector<double>& a,
                  const std::vector<double>& b, size_t M, size_t N, size_t K, bool b_trans,
                  const char* what) {
    int bad = 0;
    for (size_t i = 0; i < M; ++i)
      for (size_t j = 0; j < N; ++j) {
        double s = 0, sa = 0;
        for (size_t k = 0; k < K; ++k) {
          const double p = a[i * K + k] * (b_trans ? b[j * K + k] : b[k * N + j]);
          s += p;
          sa += std::fabs(p);
        }
        const double tol = (K + 4) * 0x1p-24 * sa + 1e-300;
        if (!(std::fabs(got[i * N + j] - s) <= tol) && ++bad <= 3)
          ADD_FAILURE() << what << "[" << i << "," << j << "] = " << got[i * N + j] << ", want "
                        << s << " ± " << tol;
      }
    EXPECT_EQ(bad, 0) << what;
  };
  const auto xq = ref_values(x, rows, in, DType::kE4M3, fc.x_fwd);
  check(y, xq, ref_values(w, in, out, DType::kE4M3, fc.w_fwd), rows, out, in, false, "y");
  // dx [rows, in] = dy [rows, out] · Wᵀ, with W [in, out] read transposed.
  check(dx, ref_values(dy, rows, out, fc.grad, fc.dy_dgrad),
        ref_values(w, in, out, DType::kE4M3, fc.w_dgrad), rows, in, out, true, "dx");
}

INSTANTIATE_TEST_SUITE_P(
    Recipes, LinearFine,
    ::testing::Values(FineCase{"block", "e4m3", DType::kE4M3, ScalingMode::kRows1x128,
                               ScalingMode::kBlock128, ScalingMode::kRows1x128,
                               ScalingMode::kBlock128},
                      FineCase{"mxfp8", "e4m3", DType::kE4M3, ScalingMode::kMx32,
                               ScalingMode::kMx32x1, ScalingMode::kMx32, ScalingMode::kMx32},
                      FineCase{"mxfp8", "e5m2", DType::kE5M2, ScalingMode::kMx32,
                               ScalingMode::kMx32x1, ScalingMode::kMx32, ScalingMode::kMx32}),
    [](const auto& p) { return std::string(p.param.recipe) + "_" + p.param.grad_format; });

}  // namespace
}  // namespace fp8lm
