// The micro-benchmarks' main: FP8LM_ISA pins the SIMD target as it does for the CLI (a bad
// value is a one-line error), and the target the kernels dispatch to is printed in the
// benchmark context, so runs on the other target are labelled.
#include <benchmark/benchmark.h>

#include <cstdio>

#include "core/check.h"
#include "kernels/simd.h"

int main(int argc, char** argv) {
  try {
    fp8lm::simd::apply_isa_env();
  } catch (const fp8lm::Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", argv[0], e.what());
    return 2;
  }
  benchmark::AddCustomContext("simd", fp8lm::simd::active_target());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
