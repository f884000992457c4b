// AVX512-BF16 micro-kernel (gemm_dot.h). Each function that uses AVX-512 says so with a
// target attribute, not a file-wide flag, so no inline function of a header shared with other
// files is ever built with instructions an AVX2 CPU lacks; all of them run only where
// cpu_has_bf16_dot().
#include "kernels/gemm_dot.h"

#include <immintrin.h>

namespace fp8lm::kernels::gemm_detail {

bool cpu_has_bf16_dot() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

// Called only where dot_tile_bf16 runs, so they may use AVX-512 too.

namespace {
// A mask of the first n of 16 lanes (all for n ≥ 16).
__attribute__((target("avx512f"))) __mmask16 first_lanes(size_t n) {
  return static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1);
}
// v rounded to BF16 codes, in the low halves of its 32-bit lanes.
__attribute__((target("avx512f,avx512bf16"))) __m512i bf16_codes(__m512 v) {
  return _mm512_maskz_cvtepu16_epi32(0xFFFF, (__m256i)_mm512_cvtneps_pbh(v));
}
}  // namespace

// 16 pairs from 32 floats: word p takes 16-bit lane 4p + 1 (x[2p]'s top half) high and lane
// 4p + 3 (x[2p + 1]'s) low, from the 64 lanes of the two vectors.
__attribute__((target("avx512f,avx512bw"))) void pair_row(uint32_t* out, const float* x,
                                                           size_t kc) {
  alignas(64) static constexpr uint16_t kLanes[32] = {
      3,  1,  7,  5,  11, 9,  15, 13, 19, 17, 23, 21, 27, 25, 31, 29,
      35, 33, 39, 37, 43, 41, 47, 45, 51, 49, 55, 53, 59, 57, 63, 61};
  const __m512i idx = _mm512_load_si512(kLanes);
  for (size_t k = 0; k < kc; k += 32) {
    const size_t n = kc - k < 32 ? kc - k : 32;
    const __m512i a = _mm512_maskz_loadu_epi32(first_lanes(n), x + k);
    const __m512i b = _mm512_maskz_loadu_epi32(first_lanes(n > 16 ? n - 16 : 0), x + k + 16);
    _mm512_mask_storeu_epi32(out + k / 2, first_lanes((n + 1) / 2),
                             _mm512_permutex2var_epi16(a, idx, b));
  }
}

__attribute__((target("avx512f,avx512bw"))) void pair_runs(uint32_t* strips, size_t stride,
                                                            size_t w, size_t p, const float* e,
                                                            const float* o, size_t n) {
  const __mmask32 low_halves = 0x55555555u;
  for (size_t s = 0; s * w < n; ++s) {
    uint32_t* out = strips + s * stride + p * w;
    for (size_t j = 0; j < w; j += 16) {
      const size_t c = s * w + j, width = w - j < 16 ? w - j : 16;
      const __mmask16 vm = first_lanes(c >= n ? 0 : n - c < width ? n - c : width);
      const __m512i ev = _mm512_maskz_loadu_epi32(vm, e + c);
      const __m512i ov = o ? _mm512_maskz_loadu_epi32(vm, o + c) : _mm512_setzero_si512();
      const __m512i words =
          _mm512_mask_mov_epi16(ev, low_halves, _mm512_maskz_srli_epi32(0xFFFF, ov, 16));
      _mm512_mask_storeu_epi32(out + j, first_lanes(width), words);
    }
  }
}

// 32 values rounded into 32 BF16 lanes in order, then each word's halves swapped: x[2p] high.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void pair_row_bf16(
    uint32_t* out, const float* x, size_t kc) {
  for (size_t k = 0; k < kc; k += 32) {
    const size_t n = kc - k < 32 ? kc - k : 32;
    const __m512 a = _mm512_maskz_loadu_ps(first_lanes(n), x + k);
    const __m512 b = _mm512_maskz_loadu_ps(first_lanes(n > 16 ? n - 16 : 0), x + k + 16);
    const __m512i lanes = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    _mm512_mask_storeu_epi32(out + k / 2, first_lanes((n + 1) / 2),
                             _mm512_maskz_rol_epi32(0xFFFF, lanes, 16));
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void pair_runs_bf16(
    uint32_t* strips, size_t stride, size_t w, size_t p, const float* e, const float* o,
    size_t n) {
  for (size_t s = 0; s * w < n; ++s) {
    uint32_t* out = strips + s * stride + p * w;
    for (size_t j = 0; j < w; j += 16) {
      const size_t c = s * w + j, width = w - j < 16 ? w - j : 16;
      const __mmask16 vm = first_lanes(c >= n ? 0 : n - c < width ? n - c : width);
      const __m512i ev = bf16_codes(_mm512_maskz_loadu_ps(vm, e + c));
      const __m512i ov =
          o ? bf16_codes(_mm512_maskz_loadu_ps(vm, o + c)) : _mm512_setzero_si512();
      _mm512_mask_storeu_epi32(out + j, first_lanes(width),
                               _mm512_or_si512(_mm512_maskz_slli_epi32(0xFFFF, ev, 16), ov));
    }
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void dot_tile_bf16(
    size_t kc, const uint32_t* ap, const uint32_t* bp, const float* prev, float* tile) {
  static_assert(kDotNR == 32 && kDotMR == 14, "two vectors of 16 lanes, 28 accumulators");
  __m512 c0[kDotMR], c1[kDotMR];
#pragma GCC unroll 14
  for (size_t r = 0; r < kDotMR; ++r) {
    c0[r] = prev ? _mm512_loadu_ps(prev + r * kDotNR) : _mm512_setzero_ps();
    c1[r] = prev ? _mm512_loadu_ps(prev + r * kDotNR + 16) : _mm512_setzero_ps();
  }
  const size_t pairs = (kc + 1) / 2;
  for (size_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(bp + p * kDotNR);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(bp + p * kDotNR + 16);
#pragma GCC unroll 14
    for (size_t r = 0; r < kDotMR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(ap[p * kDotMR + r]));
      c0[r] = _mm512_dpbf16_ps(c0[r], a, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], a, b1);
    }
  }
#pragma GCC unroll 14
  for (size_t r = 0; r < kDotMR; ++r) {
    _mm512_store_ps(tile + r * kDotNR, c0[r]);
    _mm512_store_ps(tile + r * kDotNR + 16, c1[r]);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) float dot_chains(uint64_t iters,
                                                                                 float seed) {
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3F80);  // BF16 1.0 in both halves
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3380);  // BF16 2^-24
  __m512 c[12];
#pragma GCC unroll 12
  for (int j = 0; j < 12; ++j) c[j] = _mm512_set1_ps(seed + static_cast<float>(j));
  for (uint64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) c[j] = _mm512_dpbf16_ps(c[j], a, b);
  }
  __m512 s = c[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, c[j]);
  return _mm512_cvtss_f32(s);
}

}  // namespace fp8lm::kernels::gemm_detail
