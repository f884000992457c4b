// The GEMM's AVX512-BF16 micro-kernel: FP8-valued operands (or BF16-valued ones within the
// exponent bounds of numerics/exponent_range.h) multiplied with vdpbf16ps, two K steps per
// instruction, twice the FP32 FMA's multiply-adds per cycle where the CPU has it.
//
// Why the results are the FMA path's bits: vdpbf16ps adds, per FP32 lane, the product of the
// odd BF16 pair element and then that of the even one, each rounded to nearest-even (checked
// against that model on every lane by gemm_dot_test). Values decoded from E4M3/E5M2 codes are
// BF16 values, their products are exact in FP32 (4 × 3 significant bits), never subnormal
// (≥ 2^-25) and never overflow (≤ 57344²), and sums of them are multiples of 2^-25, so the
// instruction's flush-to-zero never applies; BF16 values get the same guarantee from their
// exponents (bf16_dot_exact). Packing K step k into the odd slot and k+1 into the even one
// then sums every C element over K in the order of one FMA per step.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fp8lm::kernels::gemm_detail {

// The AVX-512 register tile, which the dot kernel shares: 14 rows × 32 columns.
inline constexpr size_t kDotMR = 14;
inline constexpr size_t kDotNR = 32;

// Whether this CPU executes AVX512-BF16 (and AVX-512 F/BW/VL, which the kernel also uses).
bool cpu_has_bf16_dot();

// The kernel's packed operands are BF16 pairs: pair row p of a strip holds, for each of its w
// rows (A) or columns (B), one 32-bit word with BF16(K step 2p) in its high half and BF16(K step
// 2p + 1) (0 past K) in its low half. The packing writes them straight from decoded (and cast)
// FP32 values, which must be BF16 values (FP8-valued ones are); the BF16 is the top half of the
// binary32. Only on a CPU with cpu_has_bf16_dot().
//
// A run of kc K steps of one row (or column): out[p] = pair of x[2p], x[2p + 1], p < ⌈kc/2⌉.
void pair_row(uint32_t* out, const float* x, size_t kc);
// Two K steps of n rows (or columns), e the even step's values and o the odd one's (null: past
// K): pair row p of the ⌈n/w⌉ strips of w words at `strips` (strip s at s·stride), zero past n.
void pair_runs(uint32_t* strips, size_t stride, size_t w, size_t p, const float* e,
               const float* o, size_t n);
// The same for values still to be rounded to BF16 (nearest even, by the CPU's conversion):
// normal or zero finite values only, which bf16_dot_exact's exponent bounds guarantee (the
// conversion treats subnormal inputs as zero).
void pair_row_bf16(uint32_t* out, const float* x, size_t kc);
void pair_runs_bf16(uint32_t* strips, size_t stride, size_t w, size_t p, const float* e,
                    const float* o, size_t n);

// tile (kDotMR × kDotNR FP32, 64-byte aligned) = prev (or 0) + the paired A strip (ceil(kc/2)
// rows of kDotMR words) · the paired B strip (ceil(kc/2) rows of kDotNR words, 64-byte
// aligned). Only on a CPU with cpu_has_bf16_dot().
void dot_tile_bf16(size_t kc, const uint32_t* ap, const uint32_t* bp, const float* prev,
                   float* tile);

// The dot products' throughput probe: `iters` rounds of 12 independent vdpbf16ps chains on
// registers (kDotChainFlops FLOPs per round); returns a value depending on every chain.
inline constexpr double kDotChainFlops = 12.0 * 16 * 2 * 2;
float dot_chains(uint64_t iters, float seed);

}  // namespace fp8lm::kernels::gemm_detail
