// The machine's FP32 FMA peak, measured with a register-only loop on the dispatched SIMD
// target (no memory traffic), as the yardstick for GEMM efficiency; and the BF16 dot-product
// peak where the GEMM uses it.
#pragma once

namespace fp8lm::kernels {

// GFLOP/s (an FMA counts 2) of `threads` threads each running independent FMA chains for
// about `seconds`: the best of five such runs.
double measure_fma_peak_gflops(int threads, double seconds = 0.3);

// The same with AVX512-BF16 dot products (a multiply-add per BF16 pair counts 2), the GEMM's
// kernel for FP8 operands where it runs (kernels/gemm_dot.h); 0 where it does not.
double measure_bf16_dot_peak_gflops(int threads, double seconds = 0.3);

}  // namespace fp8lm::kernels
