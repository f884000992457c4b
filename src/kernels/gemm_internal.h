// Shared by the GEMM driver (gemm.cc, HWY_ONCE part) and its per-target bodies: the
// argument bundle, the block-size rule and the per-thread packing workspace.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/memory.h"

namespace fp8lm::kernels::gemm_detail {

// Block sizes. K is split into passes of at most KC, summed in one fixed order; partial
// sums of a pass live in an FP32 buffer of MO×NC. All buffers are bounded by the byte
// budgets below, whatever M, N and K are.
// KC: measured on AVX-512 (Zen) at 2 threads, passes of 512..1024 beat one long pass for
// K = 2048/3072 by 5-10%; 768 keeps the common K = 768 in one pass.
inline constexpr size_t kKCMax = 768;
// Packed A block (MC×KC FP32), streamed once per B strip from L2: the target's budget
// (Tiling::a_bytes) is at most this.
inline constexpr size_t kABytes = size_t{1} << 20;
inline constexpr size_t kBBytes = size_t{4} << 20;  // packed B panel (KC×NC FP32): L3 share
// Partial sums (MO×NC FP32), K > KC only. Rows past MO start another round of passes that
// packs every B panel again: 8 MiB holds all 768 rows of a GPT-2 weight gradient beside a
// 1536-wide panel (4 MiB held 576-682), which made the 1024-token weight gradients 0.2-5%
// faster on the Zen 5 (docs/performance.md).
inline constexpr size_t kCBytes = size_t{8} << 20;

// Products of fewer than kFewRows·MR rows (decoding: one token per sequence) take the
// few-rows path: B in L2-sized panels used at once by all rows, not reuse-sized panels.
inline constexpr size_t kFewRows = 2;

// Floats from one packed strip (kc rows of w values) to the next: kc·w rounded up to whole
// cache lines, one more line when that count is even. Packing writes row k of every strip in
// turn; at a power-of-two stride (kc = 512: 32 KiB for 16-wide strips) those writes all fall
// in one L1 set and evict each other. An odd number of lines spreads them over all sets.
inline size_t strip_stride(size_t kc, size_t w) {
  size_t lines = (kc * w + 15) / 16;
  if (lines % 2 == 0) ++lines;
  return lines * 16;
}

struct Blocking {
  size_t mc, nc, kc;  // packed block sizes
  size_t mo;          // rows per outer block (all rows when K fits one pass)
  size_t passes;      // ceil(K / kc)
  // Floats of a packed A block (strips of mr rows) and B panel (strips of nr columns).
  size_t a_floats(size_t mr) const { return mc / mr * strip_stride(kc, mr); }
  size_t b_floats(size_t nr) const { return nc / nr * strip_stride(kc, nr); }
};

// Splits a thread's rows × cols into blocks of near-equal size (so no thin leftover block
// repeats a full packing of the other operand).
inline size_t balanced(size_t total, size_t max_block, size_t unit) {
  const size_t blocks = (total + max_block - 1) / max_block;
  const size_t per = (total + blocks - 1) / blocks;
  return std::max(unit, (per + unit - 1) / unit * unit);
}

// The dispatched target's register tile (MR×NR) and packed-A budget.
struct Tiling {
  size_t mr, nr, a_bytes;
};

// Half of this core's L2 (as the C library reports it), within [64 KiB, kABytes]: the A block
// then shares L2 with the B strips and C tiles streaming past it. 256 KiB if unknown.
size_t half_l2_bytes();

inline Blocking blocking(size_t K, size_t rows, size_t cols, const Tiling& t) {
  const size_t mr = t.mr, nr = t.nr;
  Blocking b{};
  b.passes = std::max<size_t>(1, (K + kKCMax - 1) / kKCMax);
  b.kc = std::max<size_t>(1, (K + b.passes - 1) / b.passes);  // equal passes
  const size_t a_bytes = std::min(t.a_bytes, kABytes);
  const size_t a_strip = strip_stride(b.kc, mr) * sizeof(float);
  const size_t b_strip = strip_stride(b.kc, nr) * sizeof(float);
  const size_t mc_max = std::max<size_t>(1, a_bytes / a_strip) * mr;
  const size_t nc_max = std::max<size_t>(1, kBBytes / b_strip) * nr;
  b.nc = balanced(std::max<size_t>(cols, 1), nc_max, nr);
  b.mc = balanced(std::max<size_t>(rows, 1), mc_max, mr);
  b.mo = rows;
  if (b.passes > 1) b.mo = std::max(b.mc, kCBytes / (b.nc * sizeof(float)) / b.mc * b.mc);
  return b;
}

struct Args {
  size_t M, N, K;
  const uint8_t* a;
  int a_type;
  bool a_trans;
  size_t lda;
  int a_cast;  // DType the packed A is cast to (f32: none), after multiplying by a_cast_mul
  float a_cast_mul;
  const float* a_bs;  // block scales of the stored A (null: none), grid row stride a_bld
  size_t a_br, a_bc, a_bld;
  const uint8_t* b;
  int b_type;
  bool b_trans;
  size_t ldb;
  int b_cast;
  float b_cast_mul;
  const float* b_bs;
  size_t b_br, b_bc, b_bld;
  uint8_t* c;
  int c_type;
  size_t ldc;
  float out_mul;      // alpha · a.scale_inv · b.scale_inv
  float beta;         // 0: C is not read
  float c_scale;      // narrow outputs store cast(y · c_scale)
  float c_scale_inv;  // old narrow C values are q · c_scale_inv
  bool saturate;
  const float* bias;
  bool gelu;
  bool want_amax;  // the caller reads the amax of y
  size_t a_bytes;  // packed-A budget (Tiling::a_bytes, or FP8LM_GEMM_A_KIB)
  bool dot;        // FP8-valued operands through the AVX512-BF16 kernel (gemm_dot.h)
};

// A B panel packed by a team of threads together: thread t of `threads` packs its share of
// each panel's strips into bp.
struct SharedPanel {
  float* bp = nullptr;
  size_t t = 0, threads = 1;
};

// Per-thread packing buffers, grown on demand and kept between calls (accounted as
// workspace). Sizes are bounded by the block sizes above.
class Workspace {
 public:
  float* get(int slot, size_t floats) {
    Buffer& b = bufs_[slot];
    if (b.bytes() < floats * sizeof(float))
      b = Buffer(floats * sizeof(float), MemCategory::kWorkspace);
    return static_cast<float*>(b.data());
  }

 private:
  Buffer bufs_[4];  // packed A, packed B, FP32 C tiles (only when K > kKCMax), decode rows
};

}  // namespace fp8lm::kernels::gemm_detail
