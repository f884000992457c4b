// GEMM with FP8/BF16/F16/F32 operands and FP32 accumulation, with fused epilogues:
//   y = act(alpha · (a.scale_inv · b.scale_inv) · op(A)·op(B) + beta · C + bias)
// where op(X) holds the decoded values, times their block scales when X has them.
//   C = y, stored in C's dtype (narrow dtypes store cast(y · c.scale)).
// op(A) is M×K, op(B) is K×N, C is M×N; every matrix is row-major with a leading dimension.
// Operands are decoded while being packed into cache-sized FP32 panels, so no full-size FP32
// copy of an FP8 operand ever exists; scales are applied once, to the FP32 accumulators.
// Backend-neutral: pointers, dtypes, scales and layouts only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "numerics/block_scales.h"
#include "numerics/dtype.h"
#include "numerics/exponent_range.h"
#include "tensor/scaled_view.h"

namespace fp8lm::kernels {

struct GemmOperand {
  const void* data = nullptr;
  DType dtype = DType::kF32;  // f32, f16, bf16, e4m3 or e5m2
  bool transposed = false;    // op(X) = Xᵀ: the stored matrix is K×M (A) or N×K (B)
  size_t ld = 0;              // elements between stored rows; 0 = the stored row length
  float scale_inv = 1.0f;     // dequantization factor of the stored values
  // Optional cast on the fly: the operand enters the product as cast(stored · cast_mul) in
  // cast_to (bf16, or e4m3/e5m2 saturating), decoded exactly; scale_inv then applies to the
  // cast values. This is how an FP16+scale master weight feeds an FP8 GEMM bit-identically
  // to its E4M3 copy, without the copy. f32 = no cast.
  DType cast_to = DType::kF32;
  float cast_mul = 1.0f;
  // Optional block scales over the stored matrix (fine-grained scaling: 1×128 tiles, 128×128
  // blocks, MX): each decoded value is multiplied by its block's scale while being packed, so
  // blocks may cut K anywhere. Not combined with cast_to. scale_inv still applies on top.
  BlockScales blocks{};
  // Optional: the exponents of the stored values (kernels::exponent_range). A product of two
  // BF16-valued operands (stored bf16, or cast to bf16 with cast_mul 1) whose ranges pass
  // bf16_dot_exact runs on the dot products where the CPU has them, with the same bits.
  ExponentRange exps{};
};

// A view as a GEMM operand (op(X) = Xᵀ when transposed): its per-tensor scale, or its block
// scales, read now (an operand lives for one call).
GemmOperand gemm_operand(const ScaledView& v, bool transposed = false);

enum class GemmActivation : uint8_t { kNone, kGelu };  // GELU: tanh approximation

struct GemmOutput {
  void* data = nullptr;
  DType dtype = DType::kF32;  // f32, bf16, e4m3 or e5m2
  size_t ld = 0;              // 0 = N
  float scale = 1.0f;         // narrow outputs store cast(y · scale); old values are q / scale
  bool saturate = true;
  float* amax = nullptr;       // if set, receives max |y| (unscaled; NaN if any y is NaN)
  const float* bias = nullptr;  // [N] f32, added to every row
  GemmActivation activation = GemmActivation::kNone;
};

// C is not read when beta == 0 (it may hold anything, NaN included). Results are
// bit-identical for every thread count and with or without the AVX512-BF16 dot products
// (FP8-valued operands, or BF16-valued ones whose exponents allow it; kernels/gemm_dot.h):
// each element is summed over K in one fixed order.
void gemm(size_t M, size_t N, size_t K, float alpha, const GemmOperand& a, const GemmOperand& b,
          float beta, const GemmOutput& c);

// Whether the dispatched GEMM has the AVX512-BF16 dot kernel: GemmOperand::exps are read only
// then, so a caller may skip measuring them otherwise.
bool gemm_has_bf16_dot();
// Products of two BF16-valued operands with measured exponent ranges where the dot kernel
// exists, since the process started: how many ran, and how many of them on the dot kernel
// (the others failed bf16_dot_exact). For benchmarks and tests.
struct Bf16DotCount {
  uint64_t products = 0, on_dot = 0;
};
Bf16DotCount bf16_dot_count();

// The packed-A block budget in effect (bytes): the dispatched target's own (AVX-512 1 MiB, else
// half the core's L2), or FP8LM_GEMM_A_KIB's. Block sizes never change results.
size_t gemm_a_block_bytes();
// Reads FP8LM_GEMM_A_KIB (KiB in [16, 1024]; unset or empty: the targets' own budgets), for
// tuning block sizes on a new CPU with `fp8lm bench gemm`. Throws Error naming the variable
// for a bad value.
void apply_gemm_env();

// Bytes of packing workspace the calling thread keeps between calls (accounted as
// MemCategory::kWorkspace); bounded by the block sizes, independent of M, N and K.
size_t gemm_workspace_bytes_per_thread();

}  // namespace fp8lm::kernels
