// The AVX512-BF16 GEMM kernel (gemm_dot.h): the instruction's rounding model on every FP8
// code, the pairing of packed operands, and whole GEMMs through it against the FP32 FMA kernel,
// bit for bit. They skip where the CPU has no AVX512-BF16 (nothing else can run the kernel).
#include "kernels/gemm_dot.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "kernels/cast.h"
#include "kernels/gemm.h"
#include "kernels/simd.h"
#include "numerics/cast_ref.h"

namespace fp8lm {
namespace {

namespace gd = kernels::gemm_detail;

uint32_t bits(float x) { return std::bit_cast<uint32_t>(x); }

class GemmDotCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gd::cpu_has_bf16_dot()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  }
  void TearDown() override { simd::force_target(0); }
};

// A value whose top half is `top` and whose low half (dropped by the pairing) is not zero.
float with_top(uint32_t top) { return std::bit_cast<float>(top << 16 | 0xBEEFu); }
constexpr uint32_t kPoison = 0xDEADBEEFu;

TEST_F(GemmDotCpu, PairRowPutsStepKHighAndStepKPlusOneLow) {
  for (size_t kc : {size_t{1}, size_t{5}, size_t{6}, size_t{31}, size_t{32}, size_t{33},
                    size_t{64}, size_t{71}}) {
    std::vector<float> x(kc);
    for (size_t k = 0; k < kc; ++k) x[k] = with_top(static_cast<uint32_t>(k + 1));
    const size_t words = (kc + 1) / 2;
    std::vector<uint32_t> out(words + 16, kPoison);
    gd::pair_row(out.data(), x.data(), kc);
    for (size_t p = 0; p < words; ++p) {
      const uint32_t lo = 2 * p + 1 < kc ? static_cast<uint32_t>(2 * p + 2) : 0u;
      ASSERT_EQ(out[p], static_cast<uint32_t>(2 * p + 1) << 16 | lo)
          << "kc " << kc << " pair " << p;
    }
    for (size_t i = words; i < out.size(); ++i) ASSERT_EQ(out[i], kPoison) << "kc " << kc;
  }
}

TEST_F(GemmDotCpu, PairRunsFillOnePairRowOfEveryStrip) {
  for (size_t w : {size_t{3}, gd::kDotMR, gd::kDotNR})
    for (size_t n : {size_t{1}, w - 1, w, w + 1, 2 * w + 5})
      for (bool odd : {true, false}) {
        std::vector<float> e(n), o(n);
        for (size_t c = 0; c < n; ++c) {
          e[c] = with_top(static_cast<uint32_t>(c + 1));
          o[c] = with_top(static_cast<uint32_t>(c + 1001));
        }
        const size_t strips = (n + w - 1) / w, stride = 3 * w + 7, p = 2;
        std::vector<uint32_t> s(strips * stride + 16, kPoison);
        gd::pair_runs(s.data(), stride, w, p, e.data(), odd ? o.data() : nullptr, n);
        for (size_t i = 0; i < s.size(); ++i) {
          const size_t st = i / stride, at = i % stride;
          if (st < strips && at >= p * w && at < (p + 1) * w) {
            const size_t c = st * w + at - p * w;
            const uint32_t want =
                c >= n ? 0u : static_cast<uint32_t>((c + 1) << 16 | (odd ? c + 1001 : 0));
            ASSERT_EQ(s[i], want) << "w " << w << " n " << n << ": strip " << st << " col " << c;
          } else {
            ASSERT_EQ(s[i], kPoison) << "w " << w << " n " << n << ": word " << i;
          }
        }
      }
}

// The pairs of values still to be rounded: the CPU's conversion gives the exact nearest-even
// BF16 (cast_ref) on normal values — ties, carries into the exponent, signs, zeros — so the
// words are pair_row's / pair_runs' of the rounded values.
TEST_F(GemmDotCpu, Bf16PairsRoundToNearestEvenAsTheReference) {
  std::mt19937 rng(11);
  auto random_normal = [&]() {
    uint32_t b = static_cast<uint32_t>(rng());
    const uint32_t exp = 1 + static_cast<uint32_t>(rng() % 253);  // 1..253: normal, finite
    b = (b & 0x807FFFFFu) | exp << 23;
    if (rng() % 4 == 0) b = (b & 0xFFFF0000u) | 0x8000u;  // a tie
    if (rng() % 16 == 0) b = (b & 0xFF800000u) | 0x7FFFFFu;  // rounds into the next binade
    if (rng() % 32 == 0) b &= 0x80000000u;  // ±0
    return std::bit_cast<float>(b);
  };
  auto rounded = [](const std::vector<float>& v) {
    std::vector<float> r(v.size());
    for (size_t i = 0; i < v.size(); ++i)
      r[i] = decode_ref(encode_ref(v[i], kBF16Format), kBF16Format);
    return r;
  };
  for (size_t kc : {size_t{1}, size_t{7}, size_t{32}, size_t{45}, size_t{768}}) {
    std::vector<float> x(kc);
    for (float& v : x) v = random_normal();
    const size_t words = (kc + 1) / 2;
    std::vector<uint32_t> got(words + 16, kPoison), want(words + 16, kPoison);
    gd::pair_row_bf16(got.data(), x.data(), kc);
    gd::pair_row(want.data(), rounded(x).data(), kc);
    ASSERT_EQ(got, want) << "pair_row_bf16, kc " << kc;
  }
  for (size_t w : {gd::kDotMR, gd::kDotNR})
    for (size_t n : {size_t{1}, w + 3, 5 * w})
      for (bool odd : {true, false}) {
        std::vector<float> e(n), o(n);
        for (size_t c = 0; c < n; ++c) {
          e[c] = random_normal();
          o[c] = random_normal();
        }
        const size_t strips = (n + w - 1) / w, stride = 2 * w + 5;
        std::vector<uint32_t> got(strips * stride, kPoison), want(strips * stride, kPoison);
        gd::pair_runs_bf16(got.data(), stride, w, 1, e.data(), odd ? o.data() : nullptr, n);
        const std::vector<float> re = rounded(e), ro = rounded(o);
        gd::pair_runs(want.data(), stride, w, 1, re.data(), odd ? ro.data() : nullptr, n);
        ASSERT_EQ(got, want) << "pair_runs_bf16, w " << w << " n " << n << " odd " << odd;
      }
}

float fp8_value(uint32_t code, DType t) { return decode_ref(code, float_format(t)); }
bool finite_code(uint32_t code, DType t) { return std::isfinite(fp8_value(code, t)); }

// Every finite code of ta times every finite code of tb as the first K step, then a random
// second step, onto random partial sums (multiples of 2^-25, as FP8 sums are): the kernel
// equals one FMA per step, in K order.
TEST_F(GemmDotCpu, EveryCodePairIsOneFmaPerStepInOrder) {
  std::mt19937 rng(7);
  const DType types[] = {DType::kE4M3, DType::kE5M2};
  for (DType ta : types)
    for (DType tb : types)
      for (size_t kc : {size_t{1}, size_t{2}}) {
        std::vector<uint32_t> codes_a, codes_b;
        for (uint32_t c = 0; c < 256; ++c) {
          if (finite_code(c, ta)) codes_a.push_back(c);
          if (finite_code(c, tb)) codes_b.push_back(c);
        }
        auto random_code = [&](const std::vector<uint32_t>& v) { return v[rng() % v.size()]; };
        alignas(64) float a[2][gd::kDotMR], b[2][gd::kDotNR];
        alignas(64) uint32_t ap[2 * gd::kDotMR], bp[2 * gd::kDotNR];
        alignas(64) float prev[gd::kDotMR * gd::kDotNR], tile[gd::kDotMR * gd::kDotNR];
        size_t checked = 0;
        for (size_t i0 = 0; i0 < codes_a.size(); i0 += gd::kDotMR) {
          for (size_t j0 = 0; j0 < codes_b.size(); j0 += gd::kDotNR) {
            for (size_t r = 0; r < gd::kDotMR; ++r) {
              a[0][r] = fp8_value(codes_a[(i0 + r) % codes_a.size()], ta);
              a[1][r] = fp8_value(random_code(codes_a), ta);
            }
            for (size_t j = 0; j < gd::kDotNR; ++j) {
              b[0][j] = fp8_value(codes_b[(j0 + j) % codes_b.size()], tb);
              b[1][j] = fp8_value(random_code(codes_b), tb);
            }
            for (float& p : prev)
              p = std::ldexp(static_cast<float>(static_cast<int32_t>(rng() % 2000001) - 1000000),
                             static_cast<int>(rng() % 48) - 25);
            // The packing: K steps 0 and 1 (if any) as one pair row.
            gd::pair_runs(ap, 2 * gd::kDotMR, gd::kDotMR, 0, a[0], kc == 2 ? a[1] : nullptr,
                          gd::kDotMR);
            gd::pair_runs(bp, 2 * gd::kDotNR, gd::kDotNR, 0, b[0], kc == 2 ? b[1] : nullptr,
                          gd::kDotNR);
            gd::dot_tile_bf16(kc, ap, bp, prev, tile);
            for (size_t r = 0; r < gd::kDotMR; ++r)
              for (size_t j = 0; j < gd::kDotNR; ++j) {
                float want = std::fma(a[0][r], b[0][j], prev[r * gd::kDotNR + j]);
                if (kc == 2) want = std::fma(a[1][r], b[1][j], want);
                ASSERT_EQ(bits(tile[r * gd::kDotNR + j]), bits(want))
                    << dtype_name(ta) << "x" << dtype_name(tb) << " kc " << kc << ": " << a[0][r]
                    << "*" << b[0][j] << " + " << a[1][r] << "*" << b[1][j] << " onto "
                    << prev[r * gd::kDotNR + j];
                ++checked;
              }
          }
        }
        EXPECT_GE(checked, codes_a.size() * codes_b.size());
      }
}

// Random bytes that are finite codes of t (all of them equally likely, subnormals and the
// largest included).
std::vector<uint8_t> random_codes(DType t, size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n);
  for (uint8_t& c : v) {
    do {
      c = static_cast<uint8_t>(rng());
    } while (!finite_code(c, t));
  }
  return v;
}

struct DotCase {
  size_t M, N, K;
  bool ta, tb;
  DType a, b, c;
  bool f16_b;     // B is FP16 cast to E4M3 while packing (an O2 master weight)
  bool epilogue;  // beta, bias, GELU and the amax
};

// One GEMM with the dot kernel and without it: every output byte and the amax equal.
void expect_same_bits(const DotCase& cs, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message()
               << cs.M << "x" << cs.N << "x" << cs.K << " ta=" << cs.ta << " tb=" << cs.tb << " "
               << dtype_name(cs.a) << "x" << (cs.f16_b ? "f16->e4m3" : dtype_name(cs.b)) << "->"
               << dtype_name(cs.c) << (cs.epilogue ? " epilogue" : ""));
  const std::vector<uint8_t> a = random_codes(cs.a, cs.M * cs.K, rng);
  std::vector<uint8_t> b;
  kernels::GemmOperand gb{nullptr, cs.b, cs.tb, 0, 0.75f};
  if (cs.f16_b) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<uint16_t> h(cs.K * cs.N);
    for (uint16_t& x : h) x = static_cast<uint16_t>(encode_ref(d(rng), kF16Format));
    b.resize(h.size() * 2);
    std::memcpy(b.data(), h.data(), b.size());
    gb.dtype = DType::kF16;
    gb.cast_to = DType::kE4M3;
    gb.cast_mul = 96.0f;
  } else {
    b = random_codes(cs.b, cs.K * cs.N, rng);
  }
  gb.data = b.data();
  const kernels::GemmOperand ga{a.data(), cs.a, cs.ta, 0, 0.5f};
  std::vector<float> bias(cs.N);
  std::normal_distribution<float> d(0.0f, 1e3f);
  for (float& x : bias) x = d(rng);
  const size_t es = dtype_size(cs.c);
  std::vector<uint8_t> old(cs.M * cs.N * es);
  for (uint8_t& x : old) x = static_cast<uint8_t>(rng() & 0x3F);  // finite in every format
  float amax[2] = {-1.0f, -1.0f};
  std::vector<uint8_t> out[2];
  for (int dot = 0; dot < 2; ++dot) {
    simd::set_bf16_dot(dot == 1);
    ASSERT_EQ(simd::active_target() == "avx512bf16", dot == 1) << simd::active_target();
    out[dot] = old;
    kernels::GemmOutput o{out[dot].data(), cs.c, 0, cs.c == DType::kF32 ? 1.0f : 1e-4f};
    if (cs.epilogue) {
      o.amax = &amax[dot];
      o.bias = bias.data();
      o.activation = kernels::GemmActivation::kGelu;
    }
    kernels::gemm(cs.M, cs.N, cs.K, 1.5f, ga, gb, cs.epilogue ? 0.5f : 0.0f, o);
  }
  EXPECT_EQ(std::memcmp(out[0].data(), out[1].data(), out[0].size()), 0);
  EXPECT_EQ(bits(amax[0]), bits(amax[1]));
}

TEST_F(GemmDotCpu, WholeGemmsAreTheFmaKernelsBits) {
  simd::force_target(0);  // the default dispatch: avx512 on a CPU with AVX512-BF16
  std::mt19937 rng(11);
  const DType e4 = DType::kE4M3, e5 = DType::kE5M2, f32 = DType::kF32;
  const DotCase cases[] = {
      {64, 96, 768, false, false, e4, e4, f32, false, false},    // full tiles straight to C
      {29, 45, 7, false, false, e4, e5, f32, false, false},      // edge tiles, odd K
      {100, 70, 1, false, false, e5, e4, f32, false, true},      // K = 1: one padded pair
      {57, 130, 1601, false, false, e4, e5, f32, false, false},  // three K passes
      {43, 77, 800, true, false, e4, e5, f32, false, true},      // Aᵀ (a weight gradient)
      {61, 50, 300, false, true, e5, e4, f32, false, false},     // Bᵀ (an input gradient)
      {90, 64, 333, false, false, e4, e4, DType::kE4M3, false, true},
      {33, 100, 515, false, false, e4, e4, DType::kBF16, true, true},  // FP16 → E4M3 B
      {200, 300, 768, false, false, e4, e4, f32, true, false},
  };
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const DotCase& cs : cases) expect_same_bits(cs, rng);
  }
  set_num_threads(2);
}

// A BF16 operand against an FP8 one, and any BF16 operand without exponent ranges, keeps the
// FMA kernel: its products can fall below FP32's normal range, where the instruction flushes
// them to zero and an FMA does not.
TEST_F(GemmDotCpu, BF16OperandsKeepTheFmaKernel) {
  simd::force_target(0);
  constexpr size_t M = 32, N = 32, K = 4;
  std::vector<uint16_t> a(M * K, static_cast<uint16_t>(bits(0x1p-120f) >> 16));
  std::vector<uint8_t> b(K * N, 0x08);  // E4M3 2^-6: products of 2^-126 · 2^-... are subnormal
  b[0] = 0x01;                          // 2^-9: a product of 2^-129
  const kernels::GemmOperand ga{a.data(), DType::kBF16, false, 0, 1.0f};
  const kernels::GemmOperand gb{b.data(), DType::kE4M3, false, 0, 1.0f};
  std::vector<float> c(M * N, -1.0f);
  kernels::gemm(M, N, K, 1.0f, ga, gb, 0.0f, {c.data(), DType::kF32});
  ASSERT_TRUE(simd::bf16_dot_active());
  EXPECT_EQ(c[0], 0x1p-129f + 3 * 0x1p-126f);
  EXPECT_EQ(c[1], 4 * 0x1p-126f);
}

// A BF16-valued operand: values of 8 significant bits, exponents uniform in [lo, hi], random
// signs, a tenth of them zero.
std::vector<float> random_bf16_values(size_t n, int lo, int hi, std::mt19937& rng) {
  std::uniform_int_distribution<int> e(lo, hi), m(128, 255);
  std::vector<float> v(n);
  for (float& x : v) {
    x = rng() % 10 == 0 ? 0.0f : std::ldexp(static_cast<float>(m(rng)), e(rng) - 7);
    if (rng() & 1) x = -x;
  }
  return v;
}

std::vector<uint16_t> to_bf16_codes(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = static_cast<uint16_t>(bits(v[i]) >> 16);
  return h;
}

// BF16-valued products whose exponents pass bf16_dot_exact take the dot kernel with the FMA
// kernel's bits: A stored f32 and cast to BF16 while packed (plus values that round), B stored
// bf16, exponent ranges at the rule's bound (loA + loB = -112, so partial sums reach 2^-126),
// measured by kernels::exponent_range as the model does.
TEST_F(GemmDotCpu, BF16ValuedOperandsWithinTheBoundsKeepTheFmaBits) {
  simd::force_target(0);
  std::mt19937 rng(5);
  struct Case {
    size_t M, N, K;
    bool ta, tb;
    int lo_a, hi_a, lo_b, hi_b;
  };
  const Case cases[] = {
      {64, 96, 768, false, false, -60, -40, -52, -30},   // at the bound: -60 + -52 = -112
      {29, 45, 7, false, true, -56, -50, -56, -50},      // edge tiles, odd K, Bᵀ
      {57, 130, 1601, true, false, -70, -20, -42, 10},   // three K passes, Aᵀ
      {200, 300, 768, false, true, -3, 3, -8, 2},        // an LM head's magnitudes
  };
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Case& cs : cases) {
      SCOPED_TRACE(::testing::Message() << cs.M << "x" << cs.N << "x" << cs.K << " threads "
                                        << threads);
      std::vector<float> a = random_bf16_values(cs.M * cs.K, cs.lo_a, cs.hi_a, rng);
      // A few low bits set: A's values round when cast to BF16 (never below 2^lo_a).
      for (size_t i = 0; i < a.size(); i += 3)
        if (a[i] != 0.0f) a[i] = std::bit_cast<float>(bits(a[i]) | 0x5A5Au);
      const std::vector<uint16_t> b =
          to_bf16_codes(random_bf16_values(cs.K * cs.N, cs.lo_b, cs.hi_b, rng));
      kernels::GemmOperand ga{a.data(), DType::kF32, cs.ta, 0, 0.5f};
      ga.cast_to = DType::kBF16;
      kernels::GemmOperand gb{b.data(), DType::kBF16, cs.tb, 0, 1.0f};
      ga.exps = kernels::exponent_range(a.data(), DType::kF32, cs.ta ? cs.K : cs.M,
                                        cs.ta ? cs.M : cs.K);
      gb.exps = kernels::exponent_range(b.data(), DType::kBF16, cs.K, cs.N);
      ASSERT_TRUE(bf16_dot_exact(ga.exps, gb.exps, cs.K))
          << ga.exps.lo << ".." << ga.exps.hi << " x " << gb.exps.lo << ".." << gb.exps.hi;
      std::vector<float> out[2];
      for (int dot = 0; dot < 2; ++dot) {
        simd::set_bf16_dot(dot == 1);
        out[dot].assign(cs.M * cs.N, std::nanf(""));
        kernels::gemm(cs.M, cs.N, cs.K, 1.0f, ga, gb, 0.0f, {out[dot].data(), DType::kF32});
      }
      EXPECT_EQ(std::memcmp(out[0].data(), out[1].data(), out[0].size() * sizeof(float)), 0);
    }
  }
  set_num_threads(2);
}

// The ranges decide: with ranges that pass the rule the dot kernel runs (a product below
// 2^-126, which the ranges hid, is flushed to zero: the kernel ran); with the true ranges, or
// none, the FMA kernel keeps it.
TEST_F(GemmDotCpu, ExponentRangesDecideTheKernel) {
  simd::force_target(0);
  constexpr size_t M = 32, N = 32, K = 2;
  std::vector<uint16_t> a(M * K, static_cast<uint16_t>(bits(1.0f) >> 16));
  std::vector<uint16_t> b(K * N, static_cast<uint16_t>(bits(1.0f) >> 16));
  a[0] = static_cast<uint16_t>(bits(0x1p-70f) >> 16);
  b[0] = static_cast<uint16_t>(bits(0x1p-60f) >> 16);
  a[1] = b[N] = 0;  // c[0] = 2^-130 + 0: subnormal
  kernels::GemmOperand ga{a.data(), DType::kBF16, false, 0, 1.0f};
  kernels::GemmOperand gb{b.data(), DType::kBF16, false, 0, 1.0f};
  auto c0 = [&] {
    std::vector<float> c(M * N, std::nanf(""));
    kernels::gemm(M, N, K, 1.0f, ga, gb, 0.0f, {c.data(), DType::kF32});
    EXPECT_EQ(c[1], 0x1p-70f + 1.0f * 0.0f);
    return c[0];
  };
  ASSERT_TRUE(simd::bf16_dot_active());
  EXPECT_EQ(c0(), 0x1p-130f);  // no ranges
  ga.exps = kernels::exponent_range(a.data(), DType::kBF16, M, K);
  gb.exps = kernels::exponent_range(b.data(), DType::kBF16, K, N);
  EXPECT_EQ(ga.exps.lo, -70);
  EXPECT_EQ(gb.exps.lo, -60);
  EXPECT_EQ(c0(), 0x1p-130f);  // the true ranges fail the rule
  ga.exps.lo = gb.exps.lo = 0;  // ranges that hide the small values
  EXPECT_EQ(c0(), 0.0f);
}

// The rule's edges: the least exponents' sum, subnormal and non-finite values, sums that could
// overflow, and operands with no nonzero value.
TEST(Bf16DotExact, Bounds) {
  auto r = [](int lo, int hi) { return ExponentRange{lo, hi, true}; };
  EXPECT_TRUE(bf16_dot_exact(r(-56, 0), r(-56, 0), 768));
  EXPECT_FALSE(bf16_dot_exact(r(-57, 0), r(-56, 0), 768));
  EXPECT_TRUE(bf16_dot_exact(r(-126, 0), r(14, 20), 768));
  EXPECT_FALSE(bf16_dot_exact(r(-127, 0), r(15, 20), 768));  // a subnormal value
  EXPECT_FALSE(bf16_dot_exact(r(0, 128), r(-100, -100), 768));  // inf or NaN
  EXPECT_TRUE(bf16_dot_exact(r(0, 60), r(0, 55), 1023));     // 60 + 55 + 2 + 10 = 127
  EXPECT_FALSE(bf16_dot_exact(r(0, 60), r(0, 55), 1024));
  EXPECT_TRUE(bf16_dot_exact(r(1, 0), r(-127, 128), 5));     // A all zero
  EXPECT_FALSE(bf16_dot_exact(ExponentRange{}, r(0, 0), 5));  // not measured
}

}  // namespace
}  // namespace fp8lm
