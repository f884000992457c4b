// Which SIMD targets the kernels were compiled for, which one runs, and pinning one
// (tests sweep every target; FP8LM_ISA=avx512bf16|avx512|avx2|scalar pins one for bug
// reports and comparisons).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace fp8lm::simd {

struct Target {
  int64_t bits;      // Highway target bit
  std::string name;  // our name: avx512, avx2, scalar, or Highway's for others
};
// For test output (GoogleTest finds it by argument-dependent lookup).
inline void PrintTo(const Target& t, std::ostream* os) { *os << t.name; }

// Targets compiled into the kernels and supported by this CPU, best first.
std::vector<Target> available_targets();
// Restricts dispatch to one target (bits from available_targets()), without the GEMM's BF16
// dot products; 0 restores the default (with them where the CPU has them).
void force_target(int64_t bits);
// Name of the target the kernels dispatch to now: "avx512bf16" when it is avx512 and the
// GEMM multiplies FP8 operands with AVX512-BF16 dot products (kernels/gemm_dot.h).
std::string active_target();
// Whether the GEMM uses the AVX512-BF16 dot products now (the CPU has them, avx512 is
// dispatched, and no pin turned them off), and turning them on or off (the results are the
// same bits either way; tests and benchmarks compare the two).
bool bf16_dot_active();
void set_bf16_dot(bool on);
// Index of `target`'s entry in a Highway dispatch table (HWY_DISPATCH_TABLE), so tests can
// call one target's kernel directly without changing the process-wide choice.
size_t dispatch_index(int64_t target);
// Applies FP8LM_ISA if set; throws Error naming the variable for an unknown value.
void apply_isa_env();

}  // namespace fp8lm::simd
