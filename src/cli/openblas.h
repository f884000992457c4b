// OpenBLAS, loaded at run time only by the benchmarks that use it as the FP32 reference.
// Loading it late lets us set OPENBLAS_CORETYPE first: Debian's OpenBLAS 0.3.21 does not
// recognise current AVX-512 CPUs and would otherwise run its SSE3 kernels.
#pragma once

#include <string>

namespace fp8lm::cli {

struct OpenBlas {
  // cblas_sgemm with CBLAS enum values as ints (row-major 101, no-trans 111, trans 112).
  using Sgemm = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float* a, int lda, const float* b, int ldb, float beta, float* c,
                         int ldc);
  Sgemm sgemm = nullptr;
  std::string core;  // what openblas_get_corename() reports
  bool avx512 = false;  // core is one of OpenBLAS's AVX-512 kernels sets

  // Loads libopenblas.so.0 with OPENBLAS_CORETYPE=`core` (empty: leave the environment
  // as it is); throws Error when it cannot be loaded.
  static OpenBlas load(int threads, const std::string& core);
};

}  // namespace fp8lm::cli
