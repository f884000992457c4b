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

struct OpenBlas {
  // cblas_sgemm with CBLAS enum values as ints (row-major 101, no-trans 111, trans 112).
  using Sgemm = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float* a, int lda, const float* b, int ldb, float beta, float* c,
                         int ldc);
  Sgemm sgemm = nullptr;
  std::string core;      // what openblas_get_corename() reports
  std::string wanted;    // the core asked for (OPENBLAS_CORETYPE), empty when none
  // The core's kernels are as wide as the CPU's (AVX-512 cores where AVX-512 runs, Haswell
  // or Zen on AVX2): the reference is then fair whichever core name the library reports.
  bool full_width = false;

  // Loads libopenblas.so.0 with OPENBLAS_CORETYPE=`core` (empty: openblas_core_for_cpu());
  // throws Error when it cannot be loaded.
  static OpenBlas load(int threads, const std::string& core);
};

}  // namespace fp8lm::cli
