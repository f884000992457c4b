#include "kernels/simd.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace fp8lm {
namespace HWY_NAMESPACE {
int64_t ActiveTargetBits() { return HWY_TARGET; }
}  // namespace HWY_NAMESPACE
}  // namespace fp8lm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <cstdlib>

#include "core/check.h"
#include "kernels/gemm_dot.h"

namespace fp8lm {
HWY_EXPORT(ActiveTargetBits);

namespace simd {
namespace {

bool dot_on = true;  // cleared by a pin to a Highway target

bool is_avx512(int64_t bits) { return bits == HWY_AVX3 || bits == HWY_AVX3_DL; }

std::string our_name(int64_t bits) {
  if (is_avx512(bits)) return "avx512";
  if (bits == HWY_AVX2) return "avx2";
  if (bits == HWY_SCALAR || bits == HWY_EMU128) return "scalar";
  return hwy::TargetName(bits);
}

}  // namespace

std::vector<Target> available_targets() {
  std::vector<Target> out;
  const int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  // Highway numbers better targets with lower bits.
  for (int64_t t = targets; t != 0; t &= t - 1) {
    const int64_t bit = t & -t;
    out.push_back({bit, our_name(bit)});
  }
  return out;
}

void force_target(int64_t bits) {
  hwy::SetSupportedTargetsForTest(bits);
  dot_on = bits == 0;
}

bool bf16_dot_active() {
  static const bool cpu = kernels::gemm_detail::cpu_has_bf16_dot();
  return dot_on && cpu && is_avx512(HWY_DYNAMIC_DISPATCH(ActiveTargetBits)());
}

void set_bf16_dot(bool on) { dot_on = on; }

size_t dispatch_index(int64_t target) {
  hwy::ChosenTarget chosen;
  chosen.Update(target);
  return chosen.GetIndex();
}

std::string active_target() {
  return bf16_dot_active() ? "avx512bf16" : our_name(HWY_DYNAMIC_DISPATCH(ActiveTargetBits)());
}

void apply_isa_env() {
  const char* isa = std::getenv("FP8LM_ISA");
  if (isa == nullptr || *isa == '\0') return;
  const bool dot = std::string(isa) == "avx512bf16" && kernels::gemm_detail::cpu_has_bf16_dot();
  for (const Target& t : available_targets()) {
    if (t.name == isa || (dot && t.name == "avx512")) {
      force_target(t.bits);
      set_bf16_dot(dot);
      return;
    }
  }
  std::string names = kernels::gemm_detail::cpu_has_bf16_dot() ? "avx512bf16" : "";
  for (const Target& t : available_targets()) names += (names.empty() ? "" : ", ") + t.name;
  fail("FP8LM_ISA=", isa, ": not available on this machine (available: ", names, ")");
}

}  // namespace simd
}  // namespace fp8lm
#endif  // HWY_ONCE
