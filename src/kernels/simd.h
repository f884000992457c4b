// Which SIMD targets the kernels were compiled for, which one runs, and pinning one
// (tests sweep every target; FP8LM_ISA=avx512|avx2|scalar pins one for bug reports).
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
// Restricts dispatch to one target (bits from available_targets()); 0 restores the default.
void force_target(int64_t bits);
// Name of the target the kernels dispatch to now.
std::string active_target();
// Index of `target`'s entry in a Highway dispatch table (HWY_DISPATCH_TABLE), so tests can
// call one target's kernel directly without changing the process-wide choice.
size_t dispatch_index(int64_t target);
// Applies FP8LM_ISA if set; throws Error naming the variable for an unknown value.
void apply_isa_env();

}  // namespace fp8lm::simd
