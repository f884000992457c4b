#include "cli/openblas.h"

#include <cpuid.h>
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "kernels/simd.h"

namespace fp8lm::cli {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool amd_cpu() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0, &a, &b, &c, &d) == 0) return false;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  return std::strcmp(vendor, "AuthenticAMD") == 0;
}

// 2: AVX-512 kernels, 1: AVX2 + FMA kernels, 0: narrower or unknown.
int simd_class(const std::string& core) {
  const std::string c = lower(core);
  if (c == "skylakex" || c == "cooperlake" || c == "sapphirerapids") return 2;
  if (c == "haswell" || c == "zen") return 1;
  return 0;
}

}  // namespace

std::string openblas_core_for_cpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return amd_cpu() ? "Zen" : "Haswell";
  return "";
}

std::string openblas_core_for_target() {
  const std::string cpu = openblas_core_for_cpu();
  const std::string target = simd::active_target();
  if (target == "avx2" && simd_class(cpu) > 1) return amd_cpu() ? "Zen" : "Haswell";
  return cpu;
}

std::string aten_capability_for_target() {
  const std::string target = simd::active_target();
  if (target.starts_with("avx512")) return "avx512";  // avx512bf16 too: ATen has no such set
  return target == "avx2" ? target : "default";
}

OpenBlas OpenBlas::load(int threads, const std::string& core) {
  OpenBlas o;
  o.wanted = core.empty() ? openblas_core_for_target() : core;
  if (!o.wanted.empty()) ::setenv("OPENBLAS_CORETYPE", o.wanted.c_str(), /*overwrite=*/1);
  void* lib = ::dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr)
    fail("cannot load OpenBLAS (libopenblas.so.0): ", ::dlerror(),
         " (scripts/setup.sh installs libopenblas-dev)");
  o.sgemm = reinterpret_cast<Sgemm>(::dlsym(lib, "cblas_sgemm"));
  auto corename = reinterpret_cast<char* (*)()>(::dlsym(lib, "openblas_get_corename"));
  auto set_threads = reinterpret_cast<void (*)(int)>(::dlsym(lib, "openblas_set_num_threads"));
  if (o.sgemm == nullptr || corename == nullptr || set_threads == nullptr)
    fail("libopenblas.so.0 lacks cblas_sgemm/openblas_get_corename/openblas_set_num_threads");
  set_threads(threads);
  o.core = corename();
  o.full_width = simd_class(o.core) >= simd_class(openblas_core_for_target());
  return o;
}

}  // namespace fp8lm::cli
