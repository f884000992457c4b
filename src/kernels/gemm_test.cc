// The GEMM against an FP64 reference computed from the dequantized operands, on every SIMD
// target: all operand/output dtype combinations, both transposes, strided layouts, α/β,
// bias and GELU epilogues, fused amax, K split into several passes, poisoned outputs.
//
// Error bound (FP32 accumulation, stated per element): with u = 2^-24 and
// S = |α·sa·sb|·Σ_k |a_ik·b_kj| + |β·c_ij| + |bias_j|, the pre-activation x satisfies
// |x̂ − x| ≤ (K + 4)·u·S (one rounding per product-sum step, plus scale, β and bias steps).
// GELU adds ≤ 1.2·(that) + 64·u·|x| (its slope is below 1.13; tanh is accurate to a few ulp).
// Narrow outputs add half an ulp of the output format at the stored magnitude.
#include "kernels/gemm.h"
#include "kernels/gemm_internal.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/cast.h"
#include "kernels/simd.h"
#include "kernels/simd_test_util.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

constexpr double kU = 0x1p-24;
const DType kTypes[] = {DType::kF32, DType::kBF16, DType::kE4M3, DType::kE5M2};
// Operands may also be F16 (the FP16+scale master weights).
const DType kInTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kE4M3, DType::kE5M2};

// A stored matrix (rows × cols, leading dimension ld) of some dtype with its scale_inv.
struct Mat {
  DType t = DType::kF32;
  size_t rows = 0, cols = 0, ld = 0;
  float scale_inv = 1.0f;
  std::vector<uint8_t> bytes;

  double at(size_t r, size_t c) const {
    const size_t es = dtype_size(t);
    uint32_t code = 0;
    std::memcpy(&code, bytes.data() + (r * ld + c) * es, es);
    const double v = t == DType::kF32 ? std::bit_cast<float>(code)
                                      : decode_ref(code, float_format(t));
    return v * scale_inv;
  }
};

// Normal(0, 1) values stored in t; narrow types use `scale` (default: one that fits N(0, 1)).
Mat random_mat(DType t, size_t rows, size_t cols, size_t ld_extra, std::mt19937& rng,
               float scale = 0.0f) {
  Mat m{t, rows, cols, cols + ld_extra, 1.0f, {}};
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(rows * m.ld);
  for (float& v : x) v = d(rng);
  m.bytes.resize(x.size() * dtype_size(t));
  if (t == DType::kF32) {
    std::memcpy(m.bytes.data(), x.data(), m.bytes.size());
  } else {
    if (scale == 0.0f)
      scale = t == DType::kE4M3 ? 64.0f
              : t == DType::kE5M2 ? 8192.0f
              : t == DType::kF16  ? 256.0f
                                  : 1.0f;
    kernels::quantize(m.bytes.data(), t, x.data(), x.size(), scale);
    m.scale_inv = 1.0f / scale;
  }
  return m;
}

double gelu(double x) {
  return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

// Half an ulp of format f at magnitude v (v in the scaled domain).
double half_ulp(double v, const FloatFormat& f) {
  const int e = v > 0 ? std::max(std::ilogb(v), f.min_normal_exp()) : f.min_normal_exp();
  return std::ldexp(1.0, e - f.man_bits - 1);
}

struct Case {
  size_t M, N, K;
  bool ta, tb;
  DType a, b, c;
  float alpha, beta;
  bool bias, gelu_act;
  size_t ld_extra;
};

void run_case(const Case& cs, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message()
               << cs.M << "x" << cs.N << "x" << cs.K << " ta=" << cs.ta << " tb=" << cs.tb << " "
               << dtype_name(cs.a) << "x" << dtype_name(cs.b) << "->" << dtype_name(cs.c)
               << " alpha=" << cs.alpha << " beta=" << cs.beta << " bias=" << cs.bias
               << " gelu=" << cs.gelu_act << " ld+" << cs.ld_extra);
  const Mat A = cs.ta ? random_mat(cs.a, cs.K, cs.M, cs.ld_extra, rng)
                      : random_mat(cs.a, cs.M, cs.K, cs.ld_extra, rng);
  const Mat B = cs.tb ? random_mat(cs.b, cs.N, cs.K, cs.ld_extra, rng)
                      : random_mat(cs.b, cs.K, cs.N, cs.ld_extra, rng);
  auto a_at = [&](size_t i, size_t k) { return cs.ta ? A.at(k, i) : A.at(i, k); };
  auto b_at = [&](size_t k, size_t j) { return cs.tb ? B.at(j, k) : B.at(k, j); };
  std::vector<float> bias(cs.N);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& v : bias) v = d(rng);

  // Reference pre-activation and its error budget, in FP64: products first, so the output
  // scale can be chosen to keep every result in range (old C values are N(0, 1)).
  const size_t M = cs.M, N = cs.N, K = cs.K;
  const double mul = static_cast<double>(cs.alpha);
  std::vector<double> prod(M * N), prod_abs(M * N);
  double bound = 0;
  for (size_t i = 0; i < M; ++i) {
    for (size_t j = 0; j < N; ++j) {
      double s = 0, sa = 0;
      for (size_t k = 0; k < K; ++k) {
        const double p = a_at(i, k) * b_at(k, j);
        s += p;
        sa += std::fabs(p);
      }
      prod[i * N + j] = mul * s;
      prod_abs[i * N + j] = std::fabs(mul) * sa;
      bound = std::max(bound, std::fabs(mul * s) + std::fabs(bias[j]) + 6 * std::fabs(cs.beta));
    }
  }
  float c_scale = 1.0f;
  if (cs.c != DType::kF32)
    c_scale = std::ldexp(1.0f, std::ilogb(float_format(cs.c).bits == 8
                                              ? info(cs.c).max_finite / (bound + 1)
                                              : 1.0));
  const Mat C = random_mat(cs.c, M, N, cs.ld_extra, rng, c_scale);  // old C
  std::vector<double> ref(M * N), tol(M * N);
  for (size_t i = 0; i < M; ++i) {
    for (size_t j = 0; j < N; ++j) {
      double x = prod[i * N + j], budget = prod_abs[i * N + j];
      if (cs.beta != 0.0f) {
        x += cs.beta * C.at(i, j);
        budget += std::fabs(cs.beta * C.at(i, j));
      }
      if (cs.bias) {
        x += bias[j];
        budget += std::fabs(bias[j]);
      }
      double t = (K + 4) * kU * budget;
      if (cs.gelu_act) {
        t = 1.2 * t + 64 * kU * std::fabs(x);
        x = gelu(x);
      }
      ref[i * N + j] = x;
      tol[i * N + j] = t + 1e-30;
    }
  }

  // Output: old values, with the gap between rows (ld > N) poisoned and checked after.
  std::vector<uint8_t> out = C.bytes;
  const size_t es = dtype_size(cs.c);
  for (size_t i = 0; i < M; ++i)
    std::memset(out.data() + (i * C.ld + N) * es, 0xA5, (C.ld - N) * es);
  if (cs.beta == 0.0f) {  // C must not be read: fill it with NaN
    for (size_t i = 0; i < M; ++i)
      for (size_t j = 0; j < N; ++j)
        std::memset(out.data() + (i * C.ld + j) * es, 0xFF, es);
  }
  float amax = -1.0f;
  const std::vector<uint8_t> before = out;
  kernels::GemmOutput o{out.data(), cs.c, C.ld, c_scale, true, &amax,
                        cs.bias ? bias.data() : nullptr,
                        cs.gelu_act ? kernels::GemmActivation::kGelu : kernels::GemmActivation::kNone};
  const kernels::GemmOperand ga{A.bytes.data(), cs.a, cs.ta, A.ld, A.scale_inv};
  const kernels::GemmOperand gb{B.bytes.data(), cs.b, cs.tb, B.ld, B.scale_inv};
  kernels::gemm(M, N, K, cs.alpha, ga, gb, cs.beta, o);
  {  // asking for the amax changes no bits
    std::vector<uint8_t> no_amax = before;
    kernels::GemmOutput od = o;
    od.data = no_amax.data();
    od.amax = nullptr;
    kernels::gemm(M, N, K, cs.alpha, ga, gb, cs.beta, od);
    EXPECT_EQ(std::memcmp(no_amax.data(), out.data(), out.size()), 0) << "differs without amax";
  }

  Mat got = C;
  got.bytes = out;
  double ref_amax = 0, amax_tol = 0;
  int bad = 0;
  for (size_t i = 0; i < M; ++i) {
    for (size_t j = 0; j < N; ++j) {
      const double r = ref[i * N + j], t = tol[i * N + j];
      ref_amax = std::max(ref_amax, std::fabs(r));
      amax_tol = std::max(amax_tol, t);
      double allowed = t;
      if (cs.c != DType::kF32)
        allowed += half_ulp((std::fabs(r) + t) * c_scale, float_format(cs.c)) / c_scale;
      const double g = got.at(i, j);
      if (!(std::fabs(g - r) <= allowed) && ++bad <= 3)
        ADD_FAILURE() << "C[" << i << "," << j << "] = " << g << ", want " << r << " ± "
                      << allowed;
    }
    for (size_t x = N * es; x < (C.ld) * es; ++x)
      ASSERT_EQ(out[i * C.ld * es + x], 0xA5) << "wrote past N in row " << i;
  }
  EXPECT_EQ(bad, 0);
  EXPECT_NEAR(amax, ref_amax, amax_tol + 1e-30);
}

class GemmOnTarget : public OnEveryTarget {};

TEST_P(GemmOnTarget, EveryDTypeCombinationRandomShapes) {
  std::mt19937 rng(2024);
  const size_t sizes[] = {1, 2, 3, 7, 13, 16, 17, 31, 33, 64, 97, 131};
  std::uniform_int_distribution<size_t> pick(0, std::size(sizes) - 1);
  std::uniform_int_distribution<int> coin(0, 1);
  int n = 0;
  for (DType a : kInTypes) {
    for (DType b : kInTypes) {
      for (DType c : kTypes) {
        Case cs{sizes[pick(rng)], sizes[pick(rng)], sizes[pick(rng)], coin(rng) == 1,
                coin(rng) == 1, a, b, c, n % 3 == 0 ? 1.0f : 0.75f,
                n % 4 == 1 ? 0.5f : 0.0f, n % 2 == 0, n % 5 == 2, static_cast<size_t>(n % 3)};
        run_case(cs, rng);
        ++n;
      }
    }
  }
}

TEST_P(GemmOnTarget, TransposesAndEpiloguesOnTheTrainingProducts) {
  std::mt19937 rng(7);
  // forward x·W (E4M3×E4M3), dgrad dy·Wᵀ (E5M2×E4M3), wgrad xᵀ·dy (E4M3×E5M2)
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      run_case({37, 53, 71, ta, tb, DType::kE4M3, DType::kE4M3, DType::kE4M3, 1.0f, 0.0f, true,
                true, 0},
               rng);
      run_case({29, 40, 64, ta, tb, DType::kE5M2, DType::kE4M3, DType::kBF16, 1.0f, 0.0f, false,
                false, 5},
               rng);
      run_case({41, 19, 83, ta, tb, DType::kE4M3, DType::kE5M2, DType::kF32, 2.0f, 1.0f, false,
                false, 0},
               rng);
    }
  }
}

TEST_P(GemmOnTarget, LargeShapesSpanSeveralBlocksAndKPasses) {
  std::mt19937 rng(99);
  // K = 1700 runs in three passes through the partial-sum buffer; 700 rows and 1400 columns
  // need several packed blocks.
  run_case({45, 70, 1700, false, true, DType::kE4M3, DType::kE4M3, DType::kF32, 1.0f, 0.5f,
            true, false, 0},
           rng);
  if (GetParam().name != "scalar")
    run_case({700, 1400, 96, true, false, DType::kE5M2, DType::kE4M3, DType::kE4M3, 1.0f, 0.0f,
              true, true, 0},
             rng);
  // FP32 operands are read where they are stored: gathers at a K pass's offset, and A stored
  // K×M in several blocks of rows (strided, so a wrong offset reads other values).
  run_case({45, 70, 1700, false, true, DType::kF32, DType::kF32, DType::kF32, 1.0f, 0.5f, true,
            false, 3},
           rng);
  run_case({700, 40, 1700, true, false, DType::kF32, DType::kF32, DType::kF32, 0.75f, 0.0f, true,
            false, 5},
           rng);
  // K = 1024: two passes of 512, whose strips would be a power of two apart unpadded
  // (gemm_detail::strip_stride); A stored K×M as in a weight gradient, a partial last strip.
  run_case({50, 72, 1024, true, false, DType::kE4M3, DType::kE5M2, DType::kF32, 1.0f, 0.0f,
            false, false, 0},
           rng);
}

TEST(Gemm, StripsAreAnOddNumberOfCacheLinesApart) {
  namespace gd = kernels::gemm_detail;
  for (size_t kc : {1, 7, 64, 342, 512, 683, 768})
    for (size_t w : {4, 6, 14, 16, 32}) {
      const size_t s = gd::strip_stride(kc, w);
      EXPECT_GE(s, kc * w);
      EXPECT_LT(s, kc * w + 32);
      EXPECT_EQ(s % 16, 0u);
      EXPECT_EQ(s / 16 % 2, 1u) << kc << " x " << w;
    }
}

TEST_P(GemmOnTarget, EmptyKGivesBetaCPlusBias) {
  std::mt19937 rng(3);
  run_case({5, 9, 0, false, false, DType::kE4M3, DType::kE4M3, DType::kF32, 1.0f, 2.0f, true,
            false, 0},
           rng);
}

// An F16 operand cast on the fly (cast_to, cast_mul) gives the same bits as the GEMM on its
// explicit cast: E4M3/E5M2 (saturating: some values overflow here) and BF16, A or B, both
// layouts, tails that are not whole vectors.
TEST_P(GemmOnTarget, CastWhilePackingEqualsTheExplicitCast) {
  std::mt19937 rng(11);
  for (DType to : {DType::kE4M3, DType::kE5M2, DType::kBF16}) {
    for (int trans = 0; trans < 4; ++trans) {
      const bool ta = trans & 1, tb = trans & 2;
      const size_t M = 37, N = 45, K = 29;
      const Mat A = random_mat(DType::kF16, ta ? K : M, ta ? M : K, 0, rng, 512.0f);
      const Mat B = random_mat(DType::kF16, tb ? N : K, tb ? K : N, 0, rng, 512.0f);
      // The explicit cast: F16 → f32 values · scale → `to`, as quantize() would.
      const float scale = to == DType::kBF16 ? 1.0f : 256.0f;  // E4M3: |x|·256 > 448 saturates
      auto cast = [&](const Mat& m) {
        std::vector<float> v(m.rows * m.cols);
        kernels::dequantize(v.data(), m.bytes.data(), DType::kF16, v.size(), m.scale_inv);
        Mat c{to, m.rows, m.cols, m.cols, 1.0f / scale, std::vector<uint8_t>(v.size() * dtype_size(to))};
        kernels::quantize(c.bytes.data(), to, v.data(), v.size(), scale, to != DType::kBF16);
        return c;
      };
      const Mat A8 = cast(A), B8 = cast(B);
      std::vector<float> want(M * N), got(M * N, std::nanf(""));
      kernels::gemm(M, N, K, 1.0f, {A8.bytes.data(), to, ta, 0, A8.scale_inv},
                    {B8.bytes.data(), to, tb, 0, B8.scale_inv}, 0.0f, {want.data()});
      kernels::GemmOperand a{A.bytes.data(), DType::kF16, ta, 0, 1.0f / scale, to,
                             A.scale_inv * scale};
      kernels::GemmOperand b{B.bytes.data(), DType::kF16, tb, 0, 1.0f / scale, to,
                             B.scale_inv * scale};
      kernels::gemm(M, N, K, 1.0f, a, b, 0.0f, {got.data()});
      EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0)
          << dtype_name(to) << " ta " << ta << " tb " << tb;
    }
  }
}

// Few rows (fewer than two register tiles) take their own path (B in L2-sized panels, used
// at once): every row must be the bits that row gets inside a larger product, for every count
// up to two AVX-512 tiles, both layouts, casts on the fly, K in one pass and in several, and
// every output type with beta, bias, GELU and the amax.
TEST_P(GemmOnTarget, FewRowsGiveTheBitsOfALargerProduct) {
  std::mt19937 rng(17);
  struct Combo {
    DType a, b, c;
    DType b_cast;
    bool gelu;
    float beta;
    size_t N, K;
  };
  const Combo combos[] = {
      {DType::kF32, DType::kF32, DType::kF32, DType::kF32, false, 0.0f, 70, 45},
      {DType::kE4M3, DType::kF16, DType::kBF16, DType::kE4M3, true, 0.0f, 33, 29},
      {DType::kBF16, DType::kE5M2, DType::kE4M3, DType::kF32, false, 0.5f, 97, 3000},
      {DType::kF32, DType::kF16, DType::kF32, DType::kBF16, true, 1.0f, 16, 1},
      {DType::kE5M2, DType::kE4M3, DType::kE5M2, DType::kF32, false, 1.0f, 64, 70}};
  const size_t big = 40;  // at least 2 tiles of rows on every target: the usual path
  for (const Combo& k : combos) {
    for (int trans = 0; trans < 4; ++trans) {
      const bool ta = trans & 1, tb = trans & 2;
      const Mat A = ta ? random_mat(k.a, k.K, big, 0, rng) : random_mat(k.a, big, k.K, 0, rng);
      const Mat B = tb ? random_mat(k.b, k.N, k.K, 0, rng) : random_mat(k.b, k.K, k.N, 0, rng);
      std::vector<float> bias(k.N);
      std::normal_distribution<float> d(0.0f, 1.0f);
      for (float& v : bias) v = d(rng);
      const std::vector<float> old_f(big * k.N, 0.25f);
      const size_t cs = dtype_size(k.c);
      std::vector<uint8_t> old(big * k.N * cs);
      if (k.c == DType::kF32)
        std::memcpy(old.data(), old_f.data(), old.size());
      else
        kernels::quantize(old.data(), k.c, old_f.data(), old_f.size(), 4.0f);
      auto run = [&](size_t M, float* amax) {
        std::vector<uint8_t> c = old;
        kernels::GemmOperand b{B.bytes.data(), B.t, tb, 0, B.scale_inv, k.b_cast, 0.5f};
        kernels::GemmOutput o{c.data(), k.c, 0, 4.0f};
        o.bias = bias.data();
        o.activation = k.gelu ? kernels::GemmActivation::kGelu : kernels::GemmActivation::kNone;
        o.amax = amax;
        kernels::gemm(M, k.N, k.K, 0.75f, {A.bytes.data(), A.t, ta, ta ? big : 0, A.scale_inv}, b,
                      k.beta, o);
        return c;
      };
      float big_amax = 0;
      const std::vector<uint8_t> want = run(big, &big_amax);
      // The few-rows path on every target, and past it: rows through the tile buffer and the
      // epilogue where the larger product's full tiles went from the registers to C.
      for (size_t M = 1; M < 29; ++M) {
        float amax = -1;
        const std::vector<uint8_t> got = run(M, &amax);
        EXPECT_EQ(std::memcmp(got.data(), want.data(), M * k.N * cs), 0)
            << dtype_name(k.a) << "x" << dtype_name(k.b) << "->" << dtype_name(k.c) << " ta " << ta
            << " tb " << tb << " M " << M;
        EXPECT_EQ(
            std::memcmp(got.data() + M * k.N * cs, old.data() + M * k.N * cs, (big - M) * k.N * cs),
            0);  // rows past M untouched
        EXPECT_GT(amax, 0.0f);
        EXPECT_LE(amax, big_amax);
      }
    }
  }
}

FP8LM_INSTANTIATE_ON_EVERY_TARGET(GemmOnTarget);

// Splits over M pack each B panel together (a share per thread), splits over N alone; both
// must give the one-thread bits: K in one pass and in several, B cast on the fly and
// transposed, N not a whole number of strips, and thread counts that share unevenly.
TEST(Gemm, DeterministicForAnyThreadCount) {
  struct Shape3 {
    size_t M, N, K;
    DType ta, tb;
    bool tb_trans;
    DType b_cast;
  };
  const Shape3 cases[] = {{300, 900, 500, DType::kE4M3, DType::kE5M2, false, DType::kF32},
                          {1000, 700, 2000, DType::kE4M3, DType::kE4M3, false, DType::kF32},
                          {257, 1000, 768, DType::kE4M3, DType::kF16, true, DType::kE4M3},
                          {96, 5000, 64, DType::kF32, DType::kF32, true, DType::kF32},
                          {5, 3000, 700, DType::kF32, DType::kF32, true, DType::kF32},  // few rows
                          {9, 2000, 300, DType::kE4M3, DType::kF16, false, DType::kE4M3}};
  const int saved = num_threads();
  std::mt19937 rng(5);
  for (const Shape3& k : cases) {
    const Mat A = random_mat(k.ta, k.M, k.K, 0, rng);
    const Mat B = k.tb_trans ? random_mat(k.tb, k.N, k.K, 0, rng) : random_mat(k.tb, k.K, k.N, 0, rng);
    auto run = [&](int threads) {
      set_num_threads(threads);
      std::vector<float> c(k.M * k.N, std::bit_cast<float>(0x7FC00001u));  // poison
      kernels::GemmOperand b{B.bytes.data(), B.t, k.tb_trans, 0, B.scale_inv, k.b_cast, 0.5f};
      kernels::gemm(k.M, k.N, k.K, 1.0f, {A.bytes.data(), A.t, false, 0, A.scale_inv}, b, 0.0f,
                    {c.data(), DType::kF32});
      return c;
    };
    const auto one = run(1);
    for (int threads : {2, 3, 4}) {
      const auto many = run(threads);
      EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * 4), 0)
          << k.M << "x" << k.N << "x" << k.K << " threads " << threads;
    }
  }
  set_num_threads(saved);
}

// The packed-A budget decides block sizes only: every budget gives the same bits. A bad
// FP8LM_GEMM_A_KIB is refused by name.
TEST(Gemm, ABlockBudgetChangesNoBits) {
  std::mt19937 rng(9);
  const size_t M = 700, N = 900, K = 1500;  // K in two passes; several A blocks at 16 KiB
  const Mat A = random_mat(DType::kE4M3, M, K, 0, rng);
  const Mat B = random_mat(DType::kE5M2, N, K, 0, rng);
  auto run = [&](const char* kib) {
    if (kib != nullptr)
      ::setenv("FP8LM_GEMM_A_KIB", kib, 1);
    else
      ::unsetenv("FP8LM_GEMM_A_KIB");
    kernels::apply_gemm_env();
    std::vector<float> c(M * N, std::bit_cast<float>(0x7FC00001u));
    std::vector<uint8_t> c8(M * N, 0xFF);
    float amax = -1.0f;
    kernels::gemm(M, N, K, 1.0f, {A.bytes.data(), A.t, false, 0, A.scale_inv},
                  {B.bytes.data(), B.t, true, 0, B.scale_inv}, 0.0f, {c.data(), DType::kF32});
    kernels::gemm(M, N, K, 1.0f, {A.bytes.data(), A.t, false, 0, A.scale_inv},
                  {B.bytes.data(), B.t, true, 0, B.scale_inv}, 0.0f,
                  {c8.data(), DType::kE4M3, 0, 8.0f, true, &amax});
    const size_t budget = kernels::gemm_a_block_bytes();
    return std::tuple{c, c8, amax, budget};
  };
  const auto [c0, q0, a0, own] = run(nullptr);
  for (const char* kib : {"16", "100", "1024"}) {
    const auto [c, q, a, budget] = run(kib);
    EXPECT_EQ(budget, static_cast<size_t>(std::atoi(kib)) << 10);
    EXPECT_EQ(std::memcmp(c.data(), c0.data(), c.size() * 4), 0) << kib << " KiB";
    EXPECT_EQ(q, q0) << kib << " KiB";
    EXPECT_EQ(a, a0) << kib << " KiB";
  }
  for (const char* kib : {"abc", "8", "2048", "64k", "-64"}) {
    ::setenv("FP8LM_GEMM_A_KIB", kib, 1);
    try {
      kernels::apply_gemm_env();
      ADD_FAILURE() << "accepted FP8LM_GEMM_A_KIB=" << kib;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("FP8LM_GEMM_A_KIB"), std::string::npos);
    }
  }
  ::unsetenv("FP8LM_GEMM_A_KIB");
  kernels::apply_gemm_env();
  EXPECT_EQ(kernels::gemm_a_block_bytes(), own);
  EXPECT_GE(own, size_t{64} << 10);
  EXPECT_LE(own, size_t{1} << 20);
}

TEST(Gemm, RejectsBadArguments) {
  float x = 1.0f, y = 0.0f;
  EXPECT_THROW(kernels::gemm(1, 1, 1, 1.0f, {&x, DType::kI32}, {&x}, 0.0f, {&y}), Error);
  EXPECT_THROW(kernels::gemm(1, 1, 1, 1.0f, {&x}, {&x}, 0.0f, {&y, DType::kF16}), Error);
  EXPECT_THROW(kernels::gemm(1, 1, 1, 1.0f, {&x, DType::kF32, false, 0, 1.0f, DType::kF16},
                             {&x}, 0.0f, {&y}),
               Error);
  EXPECT_THROW(kernels::gemm(1, 1, 1, 1.0f, {&x}, {&x}, 0.0f, {&y, DType::kI32}), Error);
  EXPECT_THROW(kernels::gemm(2, 2, 2, 1.0f, {&x, DType::kF32, false, 1}, {&x}, 0.0f, {&y}),
               Error);
  EXPECT_THROW(kernels::gemm(1, 1, 1, 1.0f, {&x}, {&x}, 0.0f, {&y, DType::kE4M3, 0, 0.0f}),
               Error);
}

}  // namespace
}  // namespace fp8lm
