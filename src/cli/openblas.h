// OpenBLAS, loaded at run time only by the benchmarks that use it as the FP32 reference.
// Loading it late lets us set OPENBLAS_CORETYPE first: Debian's OpenBLAS 0.3.21 does not
// recognise every current CPU and would otherwise run its SSE3 kernels (about 5x slower).
#pragma once

#include <string>

namespace fp8lm::cli {

// The OpenBLAS kernel set that fits this CPU: SkylakeX where AVX-512 (F, BW, DQ, VL) runs,
// otherwise Zen on AMD and Haswell on other AVX2 + FMA CPUs; empty when none applies (the
// library's own detection is used). Forcing SkylakeX on an AVX2-only CPU would die with
// "Illegal instruction", so the choice is read from the CPU, never assumed.
std::string openblas_core_for_cpu();
// The kernel set as wide as the SIMD target fp8lm dispatches to now (FP8LM_ISA): SkylakeX
// for avx512, Zen or Haswell for avx2, the CPU's for any other. A reference wider than the
// target would compare two instruction sets, not two implementations.
std::string openblas_core_for_target();
// PyTorch's ATen kernels for the same target (ATEN_CPU_CAPABILITY): avx512, avx2, default.
std::string aten_capability_for_target();

struct OpenBlas {
  // cblas_sgemm with CBLAS enum values as ints (row-major 101, no-trans 111, trans 112).
  using Sgemm = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float* a, int lda, const float* b, int ldb, float beta, float* c,
                         int ldc);
  Sgemm sgemm = nullptr;
  std::string core;      // what openblas_get_corename() reports
  std::string wanted;    // the core asked for (OPENBLAS_CORETYPE), empty when none
  // The core's kernels are as wide as fp8lm's target (AVX-512 cores for avx512, Haswell or
  // Zen for avx2): the reference is then fair whichever core name the library reports.
  bool full_width = false;

  // Loads libopenblas.so.0 with OPENBLAS_CORETYPE=`core` (empty: openblas_core_for_target());
  // throws Error when it cannot be loaded.
  static OpenBlas load(int threads, const std::string& core);
};

}  // namespace fp8lm::cli
