// The machine's FP32 FMA peak, measured with a register-only loop on the dispatched SIMD
// target (no memory traffic), as the yardstick for GEMM efficiency.
#pragma once

namespace fp8lm::kernels {

// GFLOP/s (an FMA counts 2) of `threads` threads each running independent FMA chains for
// about `seconds`.
double measure_fma_peak_gflops(int threads, double seconds = 0.3);

}  // namespace fp8lm::kernels
