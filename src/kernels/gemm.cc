// GEMM: packing with decode, register-blocked FP32 micro-kernel, fused epilogue.
//
// Loop nest per thread (every C element summed over K in one fixed order): jc over N in NC
// columns → mo over M in blocks whose partial sums fit a buffer → pc over K in passes of KC
// → ic over those rows in MC. A block (MC×KC) and B panel (KC×NC) are decoded into FP32
// strips of MR rows / NR columns, an odd number of cache lines apart (gd::strip_stride); the
// micro-kernel keeps an MR×NR tile of C in registers for the whole pass. When K fits in one
// pass (forward and input-gradient products at GPT-2 widths), the B panel is packed once per
// jc and reused by every row.
// Products of few rows (decoding) take FewRowsSlice: L2-sized B panels used at once.
// On AVX-512 with AVX512-BF16, products of FP8-valued operands are packed as BF16 pairs and
// run gemm_dot.h's kernel instead of the FMA micro-kernel: the same bits, twice the rate.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "hwy/cache_control.h"  // hwy::Prefetch

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/blocks-inl.h"
#include "kernels/codec-inl.h"
#include "kernels/gemm_dot.h"
#include "kernels/gemm_internal.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
namespace gd = kernels::gemm_detail;

using DF = hn::ScalableTag<float>;
constexpr size_t kLanes = hn::MaxLanes(DF());
// Register tile: kMR rows × 2 vectors. AVX-512: 14×32 uses 28 accumulators + 2 B vectors +
// 1 broadcast of the 32 zmm registers; AVX2: 6×16 uses 12 + 2 + 1 of 16 ymm.
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
constexpr size_t kMR = 14;
#elif HWY_TARGET == HWY_SCALAR || HWY_TARGET == HWY_EMU128
constexpr size_t kMR = 4;
#else
constexpr size_t kMR = 6;
#endif
constexpr size_t kNR = 2 * kLanes;

// The register tile and packed-A budget: AVX-512 all of kABytes (measured on its Xeon, 1 MiB
// L2); the others half the core's L2, so the A block stays there (on Zen 1 every size from
// 128 KiB to 1 MiB measured alike; docs/performance.md).
gd::Tiling GemmTiling() {
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  return {kMR, kNR, gd::kABytes};
#else
  return {kMR, kNR, gd::half_l2_bytes()};
#endif
}

// dst[0..n) = decoded src (dtype kSrc), unscaled.
template <int kSrc>
void DecodeRunT(float* HWY_RESTRICT dst, const uint8_t* HWY_RESTRICT src, size_t n) {
  const DF df;
  constexpr size_t kBytes = dtype_size(static_cast<DType>(kSrc));
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) hn::StoreU(LoadAsF32<kSrc>(df, src + i * kBytes), df, dst + i);
  if (i < n) {
    HWY_ALIGN uint8_t in[HWY_MAX_BYTES] = {};
    HWY_ALIGN float out[kLanes];
    std::memcpy(in, src + i * kBytes, (n - i) * kBytes);
    hn::Store(LoadAsF32<kSrc>(df, in), df, out);
    std::memcpy(dst + i, out, (n - i) * sizeof(float));
  }
}

void DecodeRun(float* dst, const uint8_t* src, int type, size_t n) {
  switch (static_cast<DType>(type)) {
    case DType::kF32:
      return DecodeRunT<static_cast<int>(DType::kF32)>(dst, src, n);
    case DType::kF16:
      return DecodeRunT<static_cast<int>(DType::kF16)>(dst, src, n);
    case DType::kBF16:
      return DecodeRunT<static_cast<int>(DType::kBF16)>(dst, src, n);
    case DType::kE4M3:
      return DecodeRunT<static_cast<int>(DType::kE4M3)>(dst, src, n);
    default:
      return DecodeRunT<static_cast<int>(DType::kE5M2)>(dst, src, n);
  }
}

// Row k of packed strips of width W (strip s holds run[s·W, s·W + W), zero-padded past n).
template <size_t W>
void RunToStrips(const float* HWY_RESTRICT run, size_t n, size_t k, size_t kc,
                 float* HWY_RESTRICT strips) {
  const size_t stride = gd::strip_stride(kc, W);
  size_t s = 0;
  for (; (s + 1) * W <= n; ++s)  // whole strips: a fixed-size copy, a few register moves
    std::memcpy(strips + s * stride + k * W, run + s * W, W * sizeof(float));
  if (s * W < n) {
    float* dst = strips + s * stride + k * W;
    const size_t m = n - s * W;
    std::memcpy(dst, run + s * W, m * sizeof(float));
    std::fill(dst + m, dst + W, 0.0f);
  }
}

// Stored row `row` at columns [c0, c0+n) as FP32 values times its block scales (bs: grid of
// br×bc blocks, row stride bld; null: none): an unscaled FP32 row is read where it is stored,
// any other is decoded (and scaled) into dst[0..n).
const float* StoredRow(float* dst, const uint8_t* base, int type, size_t ld, size_t row,
                       size_t c0, size_t n, const float* bs, size_t br, size_t bc, size_t bld) {
  if (type == static_cast<int>(DType::kF32) && bs == nullptr)
    return reinterpret_cast<const float*>(base) + row * ld + c0;
  DecodeRun(dst, base + (row * ld + c0) * dtype_size(static_cast<DType>(type)), type, n);
  if (bs) ScaleRun(dst, n, c0, bs + row / br * bld, bc);
  return dst;
}

// Packing reads short runs of many stored rows (a strip's rows, or one run per k), too short
// for the hardware prefetchers to get ahead of: each row read also asks for the row kAhead
// further on (none from row `end` on). Measured on Zen 5: the K = 2048 weight gradients went
// from 0.95-0.97x sgemm to 0.97-0.99x on both targets, the median row from 1.01 to 1.03.
constexpr size_t kAhead = 4;
HWY_INLINE void PrefetchRow(const uint8_t* base, int type, size_t ld, size_t end, size_t row,
                            size_t c0, size_t n) {
  if (row >= end) return;
  const size_t es = dtype_size(static_cast<DType>(type));
  const uint8_t* p = base + (row * ld + c0) * es;
  for (size_t o = 0; o < n * es; o += 64) hwy::Prefetch(p + o);
}

// Interleaves n ≤ W stored rows into one packed strip, strip[k·W + r] = row r at k (zero for
// r ≥ n); row(r, buffer) returns row r's kc values (decoded into buffer, or where stored).
// Rows go four at a time through 4×4 register transposes (a scalar scatter costs one store
// per value). tmp holds 4·kc floats.
template <size_t W, class Row>
void RowsToStrip(size_t n, size_t kc, float* HWY_RESTRICT strip, float* HWY_RESTRICT tmp,
                 const Row& row) {
  size_t r = 0;
#if HWY_TARGET != HWY_SCALAR
  const hn::FixedTag<float, 4> d4;
  const hn::FixedTag<uint64_t, 2> d64;
  for (; r + 4 <= n; r += 4) {
    const float* x[4];
    for (size_t q = 0; q < 4; ++q) x[q] = row(r + q, tmp + q * kc);
    size_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      const auto a = hn::LoadU(d4, x[0] + k), b = hn::LoadU(d4, x[1] + k);
      const auto c = hn::LoadU(d4, x[2] + k), e = hn::LoadU(d4, x[3] + k);
      const auto ab_lo = hn::BitCast(d64, hn::InterleaveLower(d4, a, b));  // a0 b0 a1 b1
      const auto ce_lo = hn::BitCast(d64, hn::InterleaveLower(d4, c, e));
      const auto ab_hi = hn::BitCast(d64, hn::InterleaveUpper(d4, a, b));  // a2 b2 a3 b3
      const auto ce_hi = hn::BitCast(d64, hn::InterleaveUpper(d4, c, e));
      float* dst = strip + k * W + r;
      hn::StoreU(hn::BitCast(d4, hn::InterleaveLower(d64, ab_lo, ce_lo)), d4, dst);
      hn::StoreU(hn::BitCast(d4, hn::InterleaveUpper(d64, ab_lo, ce_lo)), d4, dst + W);
      hn::StoreU(hn::BitCast(d4, hn::InterleaveLower(d64, ab_hi, ce_hi)), d4, dst + 2 * W);
      hn::StoreU(hn::BitCast(d4, hn::InterleaveUpper(d64, ab_hi, ce_hi)), d4, dst + 3 * W);
    }
    for (; k < kc; ++k)
      for (size_t q = 0; q < 4; ++q) strip[k * W + r + q] = x[q][k];
  }
  if (r + 2 <= n) {  // W = 6 and 14 leave two rows: interleaved in pairs, one 8-byte store each
    const float* x0 = row(r, tmp);
    const float* x1 = row(r + 1, tmp + kc);
    size_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      const auto lo = hn::BitCast(d64, hn::InterleaveLower(d4, hn::LoadU(d4, x0 + k),
                                                           hn::LoadU(d4, x1 + k)));
      const auto hi = hn::BitCast(d64, hn::InterleaveUpper(d4, hn::LoadU(d4, x0 + k),
                                                           hn::LoadU(d4, x1 + k)));
      const uint64_t pairs[4] = {hn::GetLane(lo), hn::ExtractLane(lo, 1), hn::GetLane(hi),
                                 hn::ExtractLane(hi, 1)};
      for (size_t q = 0; q < 4; ++q) std::memcpy(strip + (k + q) * W + r, pairs + q, 8);
    }
    for (; k < kc; ++k) {
      strip[k * W + r] = x0[k];
      strip[k * W + r + 1] = x1[k];
    }
    r += 2;
  }
#endif
  for (; r < n; ++r) {
    const float* x = row(r, tmp);
    for (size_t k = 0; k < kc; ++k) strip[k * W + r] = x[k];
  }
  for (; r < W; ++r)
    for (size_t k = 0; k < kc; ++k) strip[k * W + r] = 0.0f;
}

// decode(cast(v · m)) in format kTo: an operand enters the product exactly as its cast would
// (E4M3/E5M2 saturating, BF16 nearest-even with overflow to inf).
template <int kTo>
HWY_INLINE hn::Vec<DF> CastLanes(DF df, hn::Vec<DF> v, hn::Vec<DF> m) {
  constexpr FloatFormat F = float_format(static_cast<DType>(kTo));
  constexpr uint32_t kOverflow = F.bias == 127 ? F.inf_code : F.max_code;
  return DecodeLanes<F>(df, EncodeLanes<F>(df, hn::Mul(v, m), kOverflow));
}

// dst[0..n) = CastLanes<kTo>(src[i], mul); dst may be src.
template <int kTo>
void CastRunT(float* dst, const float* src, size_t n, float mul) {
  const DF df;
  const auto m = hn::Set(df, mul);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    hn::StoreU(CastLanes<kTo>(df, hn::LoadU(df, src + i), m), df, dst + i);
  if (i < n) {
    HWY_ALIGN float buf[kLanes] = {};
    std::memcpy(buf, src + i, (n - i) * sizeof(float));
    hn::Store(CastLanes<kTo>(df, hn::Load(df, buf), m), df, buf);
    std::memcpy(dst + i, buf, (n - i) * sizeof(float));
  }
}

// dst[0..n) = src cast to `to` after multiplying by mul (f32: src as it is); dst may be src.
void CastRun(float* dst, const float* src, size_t n, int to, float mul) {
  switch (static_cast<DType>(to)) {
    case DType::kF32:
      if (dst != src) std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kBF16:
      return CastRunT<static_cast<int>(DType::kBF16)>(dst, src, n, mul);
    case DType::kE4M3:
      return CastRunT<static_cast<int>(DType::kE4M3)>(dst, src, n, mul);
    default:
      return CastRunT<static_cast<int>(DType::kE5M2)>(dst, src, n, mul);
  }
}
void CastRun(float* p, size_t n, int to, float mul) { CastRun(p, p, n, to, mul); }

// The dot kernel's operands are packed as BF16 pairs (gemm_dot.h), cast on the way: no FP32
// strips, no second pass over them.

// One stored operand as the packers read it: rows of ld elements (`rows` of them), block scales
// (bs null: none), and the cast it enters the product with.
struct Stored {
  const uint8_t* base;
  int type;
  size_t ld, rows;
  const float* bs;
  size_t br, bc, bld;
  int cast;
  float cast_mul;
};
Stored StoredA(const gd::Args& g) {
  return {g.a, g.a_type, g.lda, g.a_trans ? g.K : g.M, g.a_bs, g.a_br, g.a_bc, g.a_bld,
          g.a_cast, g.a_cast_mul};
}
Stored StoredB(const gd::Args& g) {
  return {g.b, g.b_type, g.ldb, g.b_trans ? g.N : g.K, g.b_bs, g.b_br, g.b_bc, g.b_bld,
          g.b_cast, g.b_cast_mul};
}

// A cast to BF16 of a dot product's operand: its exponent bounds (bf16_dot_exact) rule out the
// subnormal, infinite and NaN values on which the CPU's conversion differs from CastLanes.
bool RoundsToBf16(int to, float mul) { return to == static_cast<int>(DType::kBF16) && mul == 1.0f; }

// Stored run (row, [c0, c0 + n)) decoded and cast as (to, mul) ask, in dst unless it is read
// where stored (unscaled FP32, no cast).
const float* CastRow(float* dst, const uint8_t* base, int type, size_t ld, size_t row, size_t c0,
                     size_t n, int to, float mul) {
  const float* x = StoredRow(dst, base, type, ld, row, c0, n, nullptr, 1, 1, 1);
  if (to == static_cast<int>(DType::kF32)) return x;
  CastRun(dst, x, n, to, mul);
  return dst;
}

// The dot kernel's operand stored along its other dimension (B as K×N, A transposed as K×M):
// K steps [k0, k0 + kc) of the run [c0, c0 + n), two at a time into the pair rows of strips W
// wide, cast as the operand asks. tmp holds 2·n floats.
template <size_t W>
void PackRunPairs(const Stored& x, size_t k0, size_t kc, size_t c0, size_t n, float* strips,
                  float* tmp) {
  const size_t stride = gd::strip_stride(kc, W);
  const bool to_bf16 = RoundsToBf16(x.cast, x.cast_mul);  // rounded as the pairs are made
  const int cast = to_bf16 ? static_cast<int>(DType::kF32) : x.cast;
  auto run = [&](float* dst, size_t k) {
    return CastRow(dst, x.base, x.type, x.ld, k, c0, n, cast, x.cast_mul);
  };
  for (size_t p = 0; 2 * p < kc; ++p) {
    const size_t k = k0 + 2 * p;
    PrefetchRow(x.base, x.type, x.ld, k0 + kc, k + kAhead, c0, n);
    PrefetchRow(x.base, x.type, x.ld, k0 + kc, k + 1 + kAhead, c0, n);
    const float* e = run(tmp, k);
    const float* o = 2 * p + 1 < kc ? run(tmp + n, k + 1) : nullptr;
    uint32_t* out = reinterpret_cast<uint32_t*>(strips);
    if (to_bf16) {
      gd::pair_runs_bf16(out, stride, W, p, e, o, n);
    } else {
      gd::pair_runs(out, stride, W, p, e, o, n);
    }
  }
}

// A row of an operand stored W-major along K (A as M×K, B transposed as N×K) for RowsToStrip
// over pairs: its kc values at x, cast as (to, mul) ask (in scratch, kc floats), as ⌈kc/2⌉
// pair words in buf.
const float* PairedRow(float* buf, const float* x, size_t kc, int to, float mul,
                       float* scratch) {
  if (RoundsToBf16(to, mul)) {
    gd::pair_row_bf16(reinterpret_cast<uint32_t*>(buf), x, kc);
    return buf;
  }
  if (to != static_cast<int>(DType::kF32)) {
    CastRun(scratch, x, kc, to, mul);
    x = scratch;
  }
  gd::pair_row(reinterpret_cast<uint32_t*>(buf), x, kc);
  return buf;
}

// An operand stored along K (A as M×K, B transposed as N×K): its rows [r0, r0 + n) × K steps
// [k0, k0 + kc), each decoded, interleaved into strips of W. For the dot kernel, pairs of K
// steps, cast as the operand asks (its rows decoded behind the 4 row buffers RowsToStrip uses);
// otherwise FP32 values, not cast.
template <size_t W>
void PackAlongK(const Stored& x, bool dot, size_t r0, size_t n, size_t k0, size_t kc,
                float* strips, float* tmp) {
  const size_t words = dot ? (kc + 1) / 2 : kc;
  for (size_t s = 0; s * W < n; ++s) {
    const size_t first = r0 + s * W;
    RowsToStrip<W>(std::min(W, n - s * W), words, strips + s * gd::strip_stride(kc, W), tmp,
                   [&](size_t r, float* buf) {
                     PrefetchRow(x.base, x.type, x.ld, x.rows, first + r + kAhead, k0, kc);
                     float* dst = dot ? tmp + 4 * words : buf;
                     const float* row = StoredRow(dst, x.base, x.type, x.ld, first + r, k0, kc,
                                                  x.bs, x.br, x.bc, x.bld);
                     return dot ? PairedRow(buf, row, kc, x.cast, x.cast_mul, dst) : row;
                   });
  }
}

// Packs rows [i0, i0+rows) × k [k0, k0+kc) of op(A) into strips of kMR rows:
// ap[s][k][r] (zero-padded past M; the caller casts), or for the dot kernel BF16 pairs
// ap[s][p][r], cast as g.a_cast asks. tmp holds max(2·rows, 4·kc) floats.
void PackA(const gd::Args& g, size_t i0, size_t rows, size_t k0, size_t kc, float* ap,
           float* tmp) {
  if (g.a_trans && g.dot) return PackRunPairs<kMR>(StoredA(g), k0, kc, i0, rows, ap, tmp);
  if (g.a_trans) {  // stored K×M: each k gives a contiguous run of rows
    for (size_t k = 0; k < kc; ++k) {
      PrefetchRow(g.a, g.a_type, g.lda, k0 + kc, k0 + k + kAhead, i0, rows);
      RunToStrips<kMR>(StoredRow(tmp, g.a, g.a_type, g.lda, k0 + k, i0, rows, g.a_bs, g.a_br,
                                 g.a_bc, g.a_bld),
                       rows, k, kc, ap);
    }
    return;
  }
  PackAlongK<kMR>(StoredA(g), g.dot, i0, rows, k0, kc, ap, tmp);  // stored M×K
}

// B as stored K×N: each k row is decoded vector by vector straight into its strips, and cast
// on the way when kTo is not f32 (an FP16 master weight entering an FP8 product).
template <int kSrc, int kTo = static_cast<int>(DType::kF32)>
void PackBRowsT(const gd::Args& g, size_t k0, size_t kc, size_t j0, size_t cols, float* bp) {
  const DF df;
  constexpr size_t kBytes = dtype_size(static_cast<DType>(kSrc));
  constexpr bool kCast = kTo != static_cast<int>(DType::kF32);
  const auto m = hn::Set(df, g.b_cast_mul);
  auto load = [&](const uint8_t* p) {
    const auto v = LoadAsF32<kSrc>(df, p);
    if constexpr (kCast) return CastLanes<kTo>(df, v, m);
    return v;
  };
  const size_t full = cols / kNR, rest = cols % kNR, stride = gd::strip_stride(kc, kNR);
  for (size_t k = 0; k < kc; ++k) {
    PrefetchRow(g.b, kSrc, g.ldb, k0 + kc, k0 + k + kAhead, j0, cols);
    const uint8_t* src = g.b + ((k0 + k) * g.ldb + j0) * kBytes;
    for (size_t s = 0; s < full; ++s) {
      float* dst = bp + s * stride + k * kNR;
      hn::Store(load(src + s * kNR * kBytes), df, dst);
      hn::Store(load(src + (s * kNR + kLanes) * kBytes), df, dst + kLanes);
    }
    if (rest != 0) {
      float* dst = bp + full * stride + k * kNR;
      DecodeRun(dst, src + full * kNR * kBytes, kSrc, rest);
      if constexpr (kCast) CastRunT<kTo>(dst, dst, rest, g.b_cast_mul);
      std::fill(dst + rest, dst + kNR, 0.0f);
    }
  }
}

// FP16 B as stored K×N (master weights) with its cast fused into the decode.
void PackBRowsF16(const gd::Args& g, size_t k0, size_t kc, size_t j0, size_t cols, float* bp) {
  constexpr int kF16 = static_cast<int>(DType::kF16);
  switch (static_cast<DType>(g.b_cast)) {
    case DType::kE4M3:
      return PackBRowsT<kF16, static_cast<int>(DType::kE4M3)>(g, k0, kc, j0, cols, bp);
    case DType::kE5M2:
      return PackBRowsT<kF16, static_cast<int>(DType::kE5M2)>(g, k0, kc, j0, cols, bp);
    case DType::kBF16:
      return PackBRowsT<kF16, static_cast<int>(DType::kBF16)>(g, k0, kc, j0, cols, bp);
    default:
      return PackBRowsT<kF16>(g, k0, kc, j0, cols, bp);
  }
}

// Packs k [k0, k0+kc) × columns [j0, j0+cols) of op(B) into strips of kNR columns:
// bp[s][k][c] (zero-padded past N; for the dot kernel BF16 pairs bp[s][p][c]), cast as g.b_cast
// asks. tmp holds max(2·cols, 4·kc) floats.
void PackB(const gd::Args& g, size_t k0, size_t kc, size_t j0, size_t cols, float* bp,
           float* tmp) {
  const size_t strips = (cols + kNR - 1) / kNR;
  if (!g.b_trans && g.b_bs) {  // stored K×N with block scales: decode, scale, then split
    for (size_t k = 0; k < kc; ++k) {
      PrefetchRow(g.b, g.b_type, g.ldb, k0 + kc, k0 + k + kAhead, j0, cols);
      RunToStrips<kNR>(StoredRow(tmp, g.b, g.b_type, g.ldb, k0 + k, j0, cols, g.b_bs, g.b_br,
                                 g.b_bc, g.b_bld),
                       cols, k, kc, bp);
    }
  } else if (!g.b_trans && g.dot) {
    return PackRunPairs<kNR>(StoredB(g), k0, kc, j0, cols, bp, tmp);
  } else if (!g.b_trans) {
    switch (static_cast<DType>(g.b_type)) {
      case DType::kF32:
        PackBRowsT<static_cast<int>(DType::kF32)>(g, k0, kc, j0, cols, bp);
        break;
      case DType::kF16:
        return PackBRowsF16(g, k0, kc, j0, cols, bp);
      case DType::kBF16:
        PackBRowsT<static_cast<int>(DType::kBF16)>(g, k0, kc, j0, cols, bp);
        break;
      case DType::kE4M3:
        PackBRowsT<static_cast<int>(DType::kE4M3)>(g, k0, kc, j0, cols, bp);
        break;
      default:
        PackBRowsT<static_cast<int>(DType::kE5M2)>(g, k0, kc, j0, cols, bp);
        break;
    }
  } else {  // stored N×K
    PackAlongK<kNR>(StoredB(g), g.dot, j0, cols, k0, kc, bp, tmp);
    if (g.dot) return;  // cast while paired
  }
  CastRun(bp, strips * gd::strip_stride(kc, kNR), g.b_cast, g.b_cast_mul);
}

// The first kRows rows of the kMR×kNR tile prev (or 0) + ap_strip · bp_strip over kc, kept
// in registers, then handed to store(r, row's first vector, row's second vector) row by row.
// Rows are independent: a row's bits do not depend on kRows.
template <size_t kRows = kMR, class Store>
HWY_INLINE void MicroKernel(size_t kc, const float* HWY_RESTRICT ap, const float* HWY_RESTRICT bp,
                            const float* HWY_RESTRICT prev, const Store& store) {
  const DF df;
  using V = hn::Vec<DF>;
  V c0[kRows], c1[kRows];
  HWY_UNROLL(16)  // ≥ kRows: fully unrolled
  for (size_t r = 0; r < kRows; ++r) {
    c0[r] = prev ? hn::Load(df, prev + r * kNR) : hn::Zero(df);
    c1[r] = prev ? hn::Load(df, prev + r * kNR + kLanes) : hn::Zero(df);
  }
  for (size_t k = 0; k < kc; ++k) {
    const V b0 = hn::Load(df, bp + k * kNR);
    const V b1 = hn::Load(df, bp + k * kNR + kLanes);
    HWY_UNROLL(16)  // ≥ kRows: fully unrolled
    for (size_t r = 0; r < kRows; ++r) {
      const V a = hn::Set(df, ap[k * kMR + r]);
      c0[r] = hn::MulAdd(a, b0, c0[r]);
      c1[r] = hn::MulAdd(a, b1, c1[r]);
    }
  }
  HWY_UNROLL(16)  // ≥ kRows: fully unrolled
  for (size_t r = 0; r < kRows; ++r) store(r, c0[r], c1[r]);
}

// A full tile's sums, handed to store row by row as MicroKernel does: from the FMA kernel, or
// on AVX-512 with g.dot from the BF16 dot kernel over paired strips (the same bits).
template <class Store>
HWY_INLINE void TileKernel(const gd::Args& g, size_t kc, const float* HWY_RESTRICT ap,
                           const float* HWY_RESTRICT bp, const float* HWY_RESTRICT prev,
                           const Store& store) {
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  static_assert(kMR == gd::kDotMR && kNR == gd::kDotNR, "the dot kernel's tile is AVX-512's");
  if (g.dot) {
    const DF df;
    HWY_ALIGN float t[kMR * kNR];
    gd::dot_tile_bf16(kc, reinterpret_cast<const uint32_t*>(ap),
                      reinterpret_cast<const uint32_t*>(bp), prev, t);
    HWY_UNROLL(16)
    for (size_t r = 0; r < kMR; ++r)
      store(r, hn::Load(df, t + r * kNR), hn::Load(df, t + r * kNR + kLanes));
    return;
  }
#else
  (void)g;
#endif
  MicroKernel(kc, ap, bp, prev, store);
}

// TileKernel into a kMR×kNR buffer (partial sums, or a finished tile for Epilogue), 64-byte
// aligned: the dot kernel stores there itself.
HWY_INLINE void TileKernel(const gd::Args& g, size_t kc, const float* HWY_RESTRICT ap,
                           const float* HWY_RESTRICT bp, const float* HWY_RESTRICT prev,
                           float* HWY_RESTRICT out) {
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  if (g.dot) {
    return gd::dot_tile_bf16(kc, reinterpret_cast<const uint32_t*>(ap),
                             reinterpret_cast<const uint32_t*>(bp), prev, out);
  }
#endif
  const DF df;
  TileKernel(g, kc, ap, bp, prev, [&](size_t r, hn::Vec<DF> v0, hn::Vec<DF> v1) {
    hn::Store(v0, df, out + r * kNR);
    hn::Store(v1, df, out + r * kNR + kLanes);
  });
}

// Into a kMR×kNR buffer (partial sums, or a finished tile for Epilogue); its first kRows rows.
template <size_t kRows = kMR>
HWY_INLINE void MicroKernel(size_t kc, const float* HWY_RESTRICT ap, const float* HWY_RESTRICT bp,
                            const float* HWY_RESTRICT prev, float* HWY_RESTRICT tile) {
  const DF df;
  MicroKernel<kRows>(kc, ap, bp, prev, [&](size_t r, hn::Vec<DF> v0, hn::Vec<DF> v1) {
    hn::Store(v0, df, tile + r * kNR);
    hn::Store(v1, df, tile + r * kNR + kLanes);
  });
}

// GELU, tanh form: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).
HWY_INLINE hn::Vec<DF> Gelu(DF df, hn::Vec<DF> x) {
  const auto inner = hn::Mul(hn::Set(df, 0.7978845608028654f),
                             hn::MulAdd(hn::Mul(hn::Set(df, 0.044715f), hn::Mul(x, x)), x, x));
  const auto half_x = hn::Mul(hn::Set(df, 0.5f), x);
  return hn::MulAdd(half_x, hwy::HWY_NAMESPACE::Tanh(df, inner), half_x);
}

// The epilogue of one vector of finished sums, for C of dtype kOut: y = alpha·scales·sum,
// + beta·C's old value, + bias, GELU; the amax of y; y (times C's scale and cast) stored.
// One body for both paths a tile takes (straight from the registers, or through the tile
// buffer), so both give the same bits.
template <int kOut>
class Finish {
 public:
  static constexpr DType kType = static_cast<DType>(kOut);
  static constexpr size_t kBytes = dtype_size(kType);

  explicit Finish(const gd::Args& g)
      : mul_(hn::Set(df_, g.out_mul)),
        beta_(hn::Set(df_, g.beta)),
        c_scale_(hn::Set(df_, g.c_scale)),
        c_scale_inv_(hn::Set(df_, g.c_scale_inv)),
        amax_(hn::Zero(di_)),
        read_c_(g.beta != 0.0f),
        gelu_(g.gelu),
        amax_wanted_(kType != DType::kF32 || g.want_amax) {
    if constexpr (kType != DType::kF32) overflow_ = OverflowCode<float_format(kType)>(g.saturate);
  }

  // v: the sums; old: C's stored values (read when beta ≠ 0); b: the bias or null.
  HWY_INLINE void operator()(hn::Vec<DF> v, const uint8_t* old, const float* b, uint8_t* dst) {
    v = hn::Mul(v, mul_);
    if (read_c_) {
      auto prev = LoadAsF32<kOut>(df_, old);
      if constexpr (kType != DType::kF32) prev = hn::Mul(prev, c_scale_inv_);
      v = hn::MulAdd(beta_, prev, v);
    }
    if (b != nullptr) v = hn::Add(v, hn::LoadU(df_, b));
    if (gelu_) v = Gelu(df_, v);
    // Lanes past a tile's columns hold zeros from the padded strips: no effect on the amax.
    if (amax_wanted_) {
      const auto abs_bits = hn::And(hn::BitCast(du_, v), hn::Set(du_, 0x7FFFFFFFu));
      amax_ = hn::Max(amax_, hn::BitCast(di_, abs_bits));
    }
    if constexpr (kType == DType::kF32) {
      hn::StoreU(v, df_, reinterpret_cast<float*>(dst));
    } else {
      constexpr FloatFormat F = float_format(kType);
      EncodeStore<F>(df_, hn::Mul(v, c_scale_), overflow_, dst);
    }
  }

  uint32_t amax() const { return static_cast<uint32_t>(hn::GetLane(hn::MaxOfLanes(di_, amax_))); }

 private:
  DF df_;
  hn::RebindToUnsigned<DF> du_;
  hn::RebindToSigned<DF> di_;
  hn::Vec<DF> mul_, beta_, c_scale_, c_scale_inv_;
  hn::Vec<hn::RebindToSigned<DF>> amax_;
  bool read_c_, gelu_, amax_wanted_;
  uint32_t overflow_ = 0;
};

// A finished full tile straight from the registers into C at (i0, j0), without the tile
// buffer. Returns the amax bits of its y.
template <int kOut>
uint32_t TileToCT(const gd::Args& g, size_t kc, const float* HWY_RESTRICT ap,
                  const float* HWY_RESTRICT bp, const float* HWY_RESTRICT prev, size_t i0,
                  size_t j0) {
  using F = Finish<kOut>;
  F fin(g);
  uint8_t* c = g.c + (i0 * g.ldc + j0) * F::kBytes;
  const float* bias = g.bias != nullptr ? g.bias + j0 : nullptr;
  TileKernel(g, kc, ap, bp, prev, [&](size_t r, hn::Vec<DF> v0, hn::Vec<DF> v1) {
    uint8_t* row = c + r * g.ldc * F::kBytes;
    fin(v0, row, bias, row);
    fin(v1, row + kLanes * F::kBytes, bias ? bias + kLanes : nullptr, row + kLanes * F::kBytes);
  });
  return fin.amax();
}

// fn(std::integral_constant<int, kOut>) for C's dtype: the output types a GEMM writes.
template <class Fn>
HWY_INLINE uint32_t ByOutputType(const gd::Args& g, const Fn& fn) {
  switch (static_cast<DType>(g.c_type)) {
    case DType::kF32:
      return fn(std::integral_constant<int, static_cast<int>(DType::kF32)>());
    case DType::kBF16:
      return fn(std::integral_constant<int, static_cast<int>(DType::kBF16)>());
    case DType::kE4M3:
      return fn(std::integral_constant<int, static_cast<int>(DType::kE4M3)>());
    default:
      return fn(std::integral_constant<int, static_cast<int>(DType::kE5M2)>());
  }
}

uint32_t TileToC(const gd::Args& g, size_t kc, const float* ap, const float* bp,
                 const float* prev, size_t i0, size_t j0) {
  return ByOutputType(g, [&](auto out) { return TileToCT<out()>(g, kc, ap, bp, prev, i0, j0); });
}

// Writes rows×cols of a finished tile from the tile buffer to C at (i0, j0); returns the
// amax bits of y. Full vectors go straight to C, a row's tail through zeroed buffers.
template <int kOut>
uint32_t EpilogueT(const gd::Args& g, const float* tile, size_t rows, size_t cols, size_t i0,
                   size_t j0) {
  using F = Finish<kOut>;
  F fin(g);
  const DF df;
  const float* bias = g.bias != nullptr ? g.bias + j0 : nullptr;
  const size_t full = cols / kLanes * kLanes, rest = cols - full;
  for (size_t r = 0; r < rows; ++r) {
    uint8_t* crow = g.c + ((i0 + r) * g.ldc + j0) * F::kBytes;
    const float* trow = tile + r * kNR;
    for (size_t j = 0; j < full; j += kLanes)
      fin(hn::Load(df, trow + j), crow + j * F::kBytes, bias ? bias + j : nullptr,
          crow + j * F::kBytes);
    if (rest != 0) {
      HWY_ALIGN uint8_t cbuf[HWY_MAX_BYTES] = {};
      HWY_ALIGN float bbuf[kLanes] = {};
      if (g.beta != 0.0f) std::memcpy(cbuf, crow + full * F::kBytes, rest * F::kBytes);
      if (bias) std::memcpy(bbuf, bias + full, rest * sizeof(float));
      fin(hn::Load(df, trow + full), cbuf, bias ? bbuf : nullptr, cbuf);
      std::memcpy(crow + full * F::kBytes, cbuf, rest * F::kBytes);
    }
  }
  return fin.amax();
}

uint32_t Epilogue(const gd::Args& g, const float* tile, size_t rows, size_t cols, size_t i0,
                  size_t j0) {
  return ByOutputType(g, [&](auto out) { return EpilogueT<out()>(g, tile, rows, cols, i0, j0); });
}

// MicroKernel<rows> for a rows count known at run time (1 ≤ rows ≤ kMR).
template <size_t kRows = kMR>
void RowsKernel(size_t rows, size_t kc, const float* ap, const float* bp, const float* prev,
                float* out) {
  if constexpr (kRows > 1) {
    if (rows < kRows) return RowsKernel<kRows - 1>(rows, kc, ap, bp, prev, out);
  }
  MicroKernel<kRows>(kc, ap, bp, prev, out);
}

// C[m0:m1, n0:n1] for one thread. Returns the amax bits of the written y. With `shared`
// (a split over M, called by every thread of the team), the B panels are packed together:
// each thread packs its share of a panel's strips, and all wait for the whole panel before
// using it and for each other before the next is packed over it.
uint32_t GemmSlice(const gd::Args& g, size_t m0, size_t m1, size_t n0, size_t n1,
                   gd::Workspace& ws, const gd::SharedPanel* shared) {
  const gd::Blocking bl = gd::blocking(g.K, m1 - m0, n1 - n0, {kMR, kNR, g.a_bytes});
  float* ap = ws.get(0, bl.a_floats(kMR));
  float* bp = shared ? shared->bp : ws.get(1, bl.b_floats(kNR));
  float* ctiles = bl.passes > 1 ? ws.get(2, bl.mo * bl.nc) : nullptr;
  float* tmp = ws.get(3, std::max({2 * bl.mc, 2 * bl.nc, 4 * bl.kc}));
  HWY_ALIGN float tile[kMR * kNR];
  uint32_t amax = 0;

  for (size_t jc = n0; jc < n1; jc += bl.nc) {
    const size_t ncur = std::min(bl.nc, n1 - jc);
    const size_t n_strips = (ncur + kNR - 1) / kNR;
    for (size_t mo = m0; mo < m1; mo += bl.mo) {  // rows whose partial sums fit in ctiles
      const size_t mo_end = std::min(m1, mo + bl.mo);
      const size_t mo_strips = (mo_end - mo + kMR - 1) / kMR;
      size_t pc = 0;
      do {  // at least once, so K == 0 still writes beta·C + bias
        const size_t kcur = std::min(bl.kc, g.K - pc);
        const bool first = pc == 0, last = pc + kcur >= g.K;
        const size_t sa = gd::strip_stride(kcur, kMR), sb = gd::strip_stride(kcur, kNR);
        const size_t s0 = shared ? n_strips * shared->t / shared->threads : 0;
        const size_t s1 = shared ? n_strips * (shared->t + 1) / shared->threads : n_strips;
        if (s1 > s0) {
          float* strips = bp + s0 * sb;
          PackB(g, pc, kcur, jc + s0 * kNR, std::min(ncur, s1 * kNR) - s0 * kNR, strips, tmp);
        }
        if (shared) {
#pragma omp barrier
        }
        for (size_t ic = mo; ic < mo_end; ic += bl.mc) {
          const size_t mcur = std::min(bl.mc, mo_end - ic);
          const size_t m_strips = (mcur + kMR - 1) / kMR;
          PackA(g, ic, mcur, pc, kcur, ap, tmp);
          if (!g.dot) CastRun(ap, m_strips * sa, g.a_cast, g.a_cast_mul);  // the dot's: paired
          for (size_t sj = 0; sj < n_strips; ++sj) {
            for (size_t si = 0; si < m_strips; ++si) {
              const size_t strip_row = (ic - mo) / kMR + si;
              float* acc =
                  ctiles ? ctiles + (sj * mo_strips + strip_row) * kMR * kNR : nullptr;
              const size_t rows = std::min(kMR, mcur - si * kMR);
              const size_t cols = std::min(kNR, ncur - sj * kNR);
              if (last && rows == kMR && cols == kNR) {  // a full tile: no tile buffer
                amax = std::max(amax, TileToC(g, kcur, ap + si * sa, bp + sj * sb,
                                              first ? nullptr : acc, ic + si * kMR, jc + sj * kNR));
                continue;
              }
              // A strip of fewer rows on FMAs costs just those rows (the dot kernel's tile
              // is fixed): threads whose row ranges end inside a strip stay balanced.
              if (rows < kMR && !g.dot) {
                RowsKernel(rows, kcur, ap + si * sa, bp + sj * sb,
                           first ? nullptr : acc, last ? tile : acc);
              } else {
                TileKernel(g, kcur, ap + si * sa, bp + sj * sb,
                           first ? nullptr : acc, last ? tile : acc);
              }
              if (last) {
                amax = std::max(amax, Epilogue(g, tile, rows, cols, ic + si * kMR, jc + sj * kNR));
              }
            }
          }
        }
        if (shared) {
#pragma omp barrier
        }
        pc += kcur;
      } while (pc < g.K);
    }
  }
  return amax;
}

// C[0:M, n0:n1] for few rows (M < kFewRows·kMR; sampling's token per sequence). A packed B
// value serves M rows only, so the panels sized for reuse would go through memory for
// little: B is packed in wide panels of short K passes that stay in the L2 (the A budget's
// size, at most half the L2 as measured on Zen 1: AVX-512's 1 MiB budget is its Xeon's whole
// L2) and are used at once by every row; a partial strip of rows runs a micro-kernel of
// just those rows. A's few rows are packed again per panel and pass (M·K per panel, next to
// the panel's K·panel of B), so the buffers stay bounded whatever K is. Packing, per-row
// arithmetic and epilogue are GemmSlice's: the same bits.
uint32_t FewRowsSlice(const gd::Args& g, size_t n0, size_t n1, gd::Workspace& ws) {
  const size_t M = g.M, K = g.K, a_strips = (M + kMR - 1) / kMR;
  constexpr size_t kc = 128;
  const size_t budget = std::min(g.a_bytes, gd::half_l2_bytes());
  const size_t panel =
      std::max<size_t>(1, budget / (gd::strip_stride(kc, kNR) * sizeof(float))) * kNR;
  float* ap = ws.get(0, a_strips * gd::strip_stride(kc, kMR));
  float* bp = ws.get(1, panel / kNR * gd::strip_stride(kc, kNR));
  float* acc = ws.get(2, panel * a_strips * kMR);
  float* tmp = ws.get(3, std::max({panel, M, 4 * kc}));
  HWY_ALIGN float tile[kMR * kNR];
  uint32_t amax = 0;
  for (size_t jp = n0; jp < n1; jp += panel) {
    const size_t cols = std::min(panel, n1 - jp), strips = (cols + kNR - 1) / kNR;
    size_t pc = 0;
    do {  // at least once, so K == 0 still writes beta·C + bias
      const size_t kcur = std::min(kc, K - pc);
      const bool first = pc == 0, last = pc + kcur >= K;
      const size_t sa = gd::strip_stride(kcur, kMR), sb = gd::strip_stride(kcur, kNR);
      PackA(g, 0, M, pc, kcur, ap, tmp);
      CastRun(ap, a_strips * sa, g.a_cast, g.a_cast_mul);
      PackB(g, pc, kcur, jp, cols, bp, tmp);
      for (size_t s = 0; s < strips; ++s) {
        for (size_t si = 0; si < a_strips; ++si) {
          const size_t rows = std::min(kMR, M - si * kMR);
          float* part = acc + (s * a_strips + si) * kMR * kNR;
          RowsKernel(rows, kcur, ap + si * sa, bp + s * sb,
                     first ? nullptr : part, last ? tile : part);
          if (last)
            amax = std::max(amax, Epilogue(g, tile, rows, std::min(kNR, cols - s * kNR), si * kMR,
                                           jp + s * kNR));
        }
      }
      pc += kcur;
    } while (pc < K);
  }
  return amax;
}

}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <unistd.h>

#include <cstdlib>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/gemm.h"
#include "kernels/simd.h"

namespace fp8lm {
HWY_EXPORT(GemmSlice);
HWY_EXPORT(FewRowsSlice);
HWY_EXPORT(GemmTiling);

namespace kernels {

namespace {
size_t a_block_override = 0;  // FP8LM_GEMM_A_KIB in bytes, 0 = the target's own budget

// The dispatched target's tiling with FP8LM_GEMM_A_KIB applied.
gemm_detail::Tiling tiling_in_effect() {
  gemm_detail::Tiling t = HWY_DYNAMIC_DISPATCH(GemmTiling)();
  if (a_block_override != 0) t.a_bytes = a_block_override;
  return t;
}
}  // namespace

void apply_gemm_env() {
  const char* v = std::getenv("FP8LM_GEMM_A_KIB");
  a_block_override = 0;
  if (v == nullptr || *v == '\0') return;
  char* end = nullptr;
  const long kib = std::strtol(v, &end, 10);
  if (*end != '\0' || kib < 16 || kib > static_cast<long>(gemm_detail::kABytes >> 10))
    fail("FP8LM_GEMM_A_KIB=", v, ": not a whole number of KiB in [16, ",
         gemm_detail::kABytes >> 10, "]");
  a_block_override = static_cast<size_t>(kib) << 10;
}

bool gemm_has_bf16_dot() { return simd::bf16_dot_active(); }

namespace {
std::atomic<uint64_t> bf16_products{0}, bf16_on_dot{0};
}  // namespace

Bf16DotCount bf16_dot_count() {
  return {bf16_products.load(std::memory_order_relaxed),
          bf16_on_dot.load(std::memory_order_relaxed)};
}

size_t gemm_a_block_bytes() { return tiling_in_effect().a_bytes; }

size_t gemm_detail::half_l2_bytes() {
  static const size_t bytes = [] {
    const long l2 = ::sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 <= 0) return size_t{256} << 10;
    return std::clamp(static_cast<size_t>(l2) / 2, size_t{64} << 10, gemm_detail::kABytes);
  }();
  return bytes;
}

namespace {

bool is_gemm_dtype(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kE4M3 || t == DType::kE5M2;
}
// F16 is read (FP16+scale master weights feed the GEMMs directly), never written.
bool is_gemm_input_dtype(DType t) { return is_gemm_dtype(t) || t == DType::kF16; }
// The operand enters the product as FP8 values (the dot kernel's condition, gemm_dot.h).
bool fp8_valued(const GemmOperand& x) {
  auto fp8 = [](DType t) { return t == DType::kE4M3 || t == DType::kE5M2; };
  if (x.cast_to != DType::kF32) return fp8(x.cast_to);
  return fp8(x.dtype) && x.blocks.data == nullptr;
}

// The operand enters the product as BF16(stored value) (bf16_dot_exact's condition).
bool bf16_valued(const GemmOperand& x) {
  if (x.blocks.data != nullptr) return false;
  if (x.cast_to != DType::kF32) return x.cast_to == DType::kBF16 && x.cast_mul == 1.0f;
  return x.dtype == DType::kBF16;
}

bool is_cast_dtype(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kE4M3 || t == DType::kE5M2;
}

// Block scales of one operand as the packing loops read them: f32 grid rows (an e8m0 grid is
// widened into `grid` once per call, as is an unaligned f32 one), block extents with 0
// resolved to the whole dimension.
void bind_blocks(const GemmOperand& x, size_t rows, size_t cols, const char* name,
                 std::vector<float>& grid, const float*& bs, size_t& br, size_t& bc,
                 size_t& bld) {
  bs = nullptr;
  br = bc = bld = 1;
  if (x.blocks.data == nullptr) return;
  const BlockShape& sh = x.blocks.shape;
  FP8LM_CHECK(sh.scale_dtype == DType::kF32 || sh.scale_dtype == DType::kE8M0, "gemm: ", name,
              " block scales must be f32 or e8m0, got ", dtype_name(sh.scale_dtype));
  FP8LM_CHECK(x.cast_to == DType::kF32, "gemm: ", name,
              " cannot have both block scales and a cast on the fly");
  br = sh.rows ? sh.rows : std::max<size_t>(rows, 1);
  bc = sh.cols ? sh.cols : std::max<size_t>(cols, 1);
  const size_t grid_rows = grid_extent(rows, sh.rows), grid_cols = grid_extent(cols, sh.cols);
  bld = x.blocks.ld ? x.blocks.ld : grid_cols;
  FP8LM_CHECK(bld >= grid_cols, "gemm: ", name, " block-scale grid stride ", bld,
              " is less than its ", grid_cols, " columns");
  if (grid_is_aligned_f32(x.blocks)) {
    bs = static_cast<const float*>(x.blocks.data);
    return;
  }
  grid.resize(grid_rows * grid_cols);
  for (size_t r = 0; r < grid_rows; ++r)
    for (size_t c = 0; c < grid_cols; ++c) grid[r * grid_cols + c] = block_scale_at(x.blocks, bld, r, c);
  bs = grid.data();
  bld = grid_cols;
}

gemm_detail::Workspace& thread_workspace() {
  thread_local gemm_detail::Workspace ws;
  return ws;
}

}  // namespace

size_t gemm_workspace_bytes_per_thread() {
  // Packed A ≤ kABytes, packed B ≤ kBBytes, partial sums ≤ kCBytes, and the decode rows
  // (one panel row, or four runs of ≤ kKCMax) fit in kBBytes (see blocking()).
  return gemm_detail::kABytes + 2 * gemm_detail::kBBytes + gemm_detail::kCBytes;
}

void gemm(size_t M, size_t N, size_t K, float alpha, const GemmOperand& a, const GemmOperand& b,
          float beta, const GemmOutput& c) {
  FP8LM_CHECK(is_gemm_input_dtype(a.dtype) && is_gemm_input_dtype(b.dtype) &&
                  is_gemm_dtype(c.dtype),
              "gemm: operands must be f32, f16, bf16, e4m3 or e5m2, the output f32, bf16, e4m3 "
              "or e5m2 (A ", dtype_name(a.dtype), ", B ",
              dtype_name(b.dtype), ", C ", dtype_name(c.dtype), ")");
  FP8LM_CHECK(is_cast_dtype(a.cast_to) && is_cast_dtype(b.cast_to),
              "gemm: operand casts must be to bf16, e4m3 or e5m2 (A ", dtype_name(a.cast_to),
              ", B ", dtype_name(b.cast_to), ")");
  const size_t a_cols = a.transposed ? M : K, b_cols = b.transposed ? K : N;
  const size_t a_rows = a.transposed ? K : M, b_rows = b.transposed ? N : K;
  gemm_detail::Args g{};
  std::vector<float> a_grid, b_grid;
  bind_blocks(a, a_rows, a_cols, "A", a_grid, g.a_bs, g.a_br, g.a_bc, g.a_bld);
  bind_blocks(b, b_rows, b_cols, "B", b_grid, g.b_bs, g.b_br, g.b_bc, g.b_bld);
  g.M = M;
  g.N = N;
  g.K = K;
  g.a = static_cast<const uint8_t*>(a.data);
  g.a_type = static_cast<int>(a.dtype);
  g.a_trans = a.transposed;
  g.lda = a.ld ? a.ld : a_cols;
  g.a_cast = static_cast<int>(a.cast_to);
  g.a_cast_mul = a.cast_mul;
  g.b = static_cast<const uint8_t*>(b.data);
  g.b_type = static_cast<int>(b.dtype);
  g.b_trans = b.transposed;
  g.ldb = b.ld ? b.ld : b_cols;
  g.b_cast = static_cast<int>(b.cast_to);
  g.b_cast_mul = b.cast_mul;
  g.c = static_cast<uint8_t*>(c.data);
  g.c_type = static_cast<int>(c.dtype);
  g.ldc = c.ld ? c.ld : N;
  g.out_mul = alpha * a.scale_inv * b.scale_inv;
  g.beta = beta;
  g.c_scale = c.scale;
  g.c_scale_inv = 1.0f / c.scale;
  g.saturate = c.saturate;
  g.bias = c.bias;
  g.gelu = c.activation == GemmActivation::kGelu;
  g.want_amax = c.amax != nullptr;
  const gemm_detail::Tiling tiling = tiling_in_effect();
  // Products of few rows keep the FMA kernel (they are bound by reading B).
  const bool few_rows = M < gemm_detail::kFewRows * tiling.mr;
  const bool bf16_measured = simd::bf16_dot_active() && bf16_valued(a) && bf16_valued(b) &&
                             a.exps.known && b.exps.known;
  g.dot = simd::bf16_dot_active() && !few_rows &&
          ((fp8_valued(a) && fp8_valued(b)) ||
           (bf16_measured && bf16_dot_exact(a.exps, b.exps, K)));
  if (bf16_measured) {
    bf16_products.fetch_add(1, std::memory_order_relaxed);
    if (g.dot) bf16_on_dot.fetch_add(1, std::memory_order_relaxed);
  }
  FP8LM_CHECK(g.lda >= a_cols && g.ldb >= b_cols && g.ldc >= N,
              "gemm: leading dimensions too small (lda ", g.lda, ", ldb ", g.ldb, ", ldc ", g.ldc,
              ")");
  FP8LM_CHECK(c.dtype == DType::kF32 || (c.scale > 0.0f && std::isfinite(c.scale)),
              "gemm: output scale must be finite and positive, got ", c.scale);
  if (M == 0 || N == 0) {
    if (c.amax) *c.amax = 0.0f;
    return;
  }
  FP8LM_CHECK(c.data != nullptr && (K == 0 || (a.data != nullptr && b.data != nullptr)),
              "gemm: null operand");

  // Split M or N over the threads, whichever leaves each thread the least packing. With N
  // split, every thread packs its columns of B and all of A, A again for each column block;
  // with M split, its rows of A, and the threads pack each B panel together (a share each).
  // Packs that gather across rows (A as stored M×K, B as stored N×K) cost about three times
  // the contiguous ones.
  constexpr double kMinFlopsPerThread = 1 << 22;
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  const size_t by_work = static_cast<size_t>(std::max(1.0, flops / kMinFlopsPerThread));
  g.a_bytes = tiling.a_bytes;
  const size_t nr = tiling.nr;
  const size_t max_threads = std::min(static_cast<size_t>(num_threads()), by_work);
  std::vector<uint32_t> amax;
  if (few_rows) {  // B in L2-sized panels, columns split
    // Threads by the bytes of B, which bound this product (its FLOPs are few).
    const size_t strips = (N + nr - 1) / nr;
    const size_t threads =
        std::min({static_cast<size_t>(num_threads()), strips, std::max<size_t>(1, N * K >> 16)});
    amax.assign(threads, 0);
    auto slice = [&](size_t t) {
      const size_t j0 = strips * t / threads * nr,
                   j1 = std::min(N, strips * (t + 1) / threads * nr);
      amax[t] = HWY_DYNAMIC_DISPATCH(FewRowsSlice)(g, j0, j1, thread_workspace());
    };
    if (threads == 1) {
      slice(0);
    } else {
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads))
      for (size_t t = 0; t < threads; ++t) slice(t);
    }
    if (c.amax) *c.amax = std::bit_cast<float>(*std::max_element(amax.begin(), amax.end()));
    return;
  }
  const double wa = a.transposed ? 1.0 : 3.0, wb = b.transposed ? 3.0 : 1.0;
  auto pack_cost = [&](bool split_n) {
    const size_t rows = split_n ? M : (M + max_threads - 1) / max_threads;
    const size_t cols = split_n ? (N + max_threads - 1) / max_threads : N;
    const auto bl = gemm_detail::blocking(K, rows, cols, tiling);
    const double col_blocks = static_cast<double>((cols + bl.nc - 1) / bl.nc);
    const double b_share = split_n ? 1.0 : static_cast<double>(max_threads);
    // Shared panels: each thread also reads the other threads' shares from their caches
    // (weighed as a contiguous pack: the LM head's 256-row chunks, 1024×3072×768 and c_fc's
    // weight gradient then split over N, 2-7% faster on the Zen 5, docs/performance.md).
    const double remote = split_n ? 0.0 : static_cast<double>(cols) * K * (1.0 - 1.0 / b_share);
    return static_cast<double>(rows) * K * wa * col_blocks +
           static_cast<double>(cols) * K * wb / b_share + remote;
  };
  const bool split_n = pack_cost(true) <= pack_cost(false);
  // Columns go in whole strips; rows evenly, a thread's short last strip costing only its
  // rows on FMAs (256 rows in strips of 14: 10 + 9 strips wait on the tenth; 128 + 128 rows
  // are 9 strips and one of 2 rows each).
  const size_t unit = split_n ? nr : 1;
  const size_t units = ((split_n ? N : M) + unit - 1) / unit;
  const size_t threads = std::min(max_threads, units);
  auto bounds = [&](size_t t) {
    const size_t u0 = units * t / threads, u1 = units * (t + 1) / threads;
    return std::pair<size_t, size_t>{u0 * unit, std::min(u1 * unit, split_n ? N : M)};
  };
  // Shared panels need every thread on the same sequence of panels: one block of rows each
  // (its partial sums over all K passes fit the accumulator buffer).
  bool share_b = !split_n && threads > 1;
  for (size_t t = 0; share_b && t < threads; ++t) {
    const auto [lo, hi] = bounds(t);
    const auto bl = gemm_detail::blocking(K, hi - lo, N, tiling);
    share_b = bl.passes == 1 || bl.mo >= hi - lo;
  }
  gemm_detail::SharedPanel shared{};
  if (share_b) {
    // The calling thread's own B buffer: it is thread 0 of the team, whose slice would use
    // it anyway (nc and kc depend on N and K only, so every slice wants the same size).
    const auto bl = gemm_detail::blocking(K, M, N, tiling);
    shared.bp = thread_workspace().get(1, bl.b_floats(nr));
    shared.threads = threads;
  }
  amax.assign(threads, 0);
  auto run = [&](size_t t, const gemm_detail::SharedPanel* sp) {
    const auto [lo, hi] = bounds(t);
    amax[t] = split_n ? HWY_DYNAMIC_DISPATCH(GemmSlice)(g, 0, M, lo, hi, thread_workspace(), sp)
                      : HWY_DYNAMIC_DISPATCH(GemmSlice)(g, lo, hi, 0, N, thread_workspace(), sp);
  };
  if (threads == 1) {
    run(0, nullptr);
  } else {
#pragma omp parallel num_threads(static_cast<int>(threads))
    {
      const size_t team = static_cast<size_t>(omp_get_num_threads());
      const size_t me = static_cast<size_t>(omp_get_thread_num());
      if (share_b && team == threads) {
        gemm_detail::SharedPanel mine = shared;
        mine.t = me;
        run(me, &mine);
      } else {  // a smaller team than asked for: each thread runs whole slices on its own
        for (size_t t = me; t < threads; t += team) run(t, nullptr);
      }
    }
  }
  if (c.amax) *c.amax = std::bit_cast<float>(*std::max_element(amax.begin(), amax.end()));
}

GemmOperand gemm_operand(const ScaledView& v, bool transposed) {
  GemmOperand o{v.data.data, v.data.dtype, transposed, 0, v.tensor_scale()};
  o.blocks = v.blocks();
  return o;
}

}  // namespace kernels
}  // namespace fp8lm
#endif  // HWY_ONCE
