#include "cli/openblas.h"

#include <dlfcn.h>

#include <cstdlib>

#include "core/check.h"

namespace fp8lm::cli {

OpenBlas OpenBlas::load(int threads, const std::string& core) {
  if (!core.empty()) ::setenv("OPENBLAS_CORETYPE", core.c_str(), /*overwrite=*/1);
  void* lib = ::dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr)
    fail("cannot load OpenBLAS (libopenblas.so.0): ", ::dlerror(),
         " (scripts/setup.sh installs libopenblas-dev)");
  OpenBlas o;
  o.sgemm = reinterpret_cast<Sgemm>(::dlsym(lib, "cblas_sgemm"));
  auto corename = reinterpret_cast<char* (*)()>(::dlsym(lib, "openblas_get_corename"));
  auto set_threads = reinterpret_cast<void (*)(int)>(::dlsym(lib, "openblas_set_num_threads"));
  if (o.sgemm == nullptr || corename == nullptr || set_threads == nullptr)
    fail("libopenblas.so.0 lacks cblas_sgemm/openblas_get_corename/openblas_set_num_threads");
  set_threads(threads);
  o.core = corename();
  for (const char* c : {"SkylakeX", "Cooperlake", "SapphireRapids"})
    if (o.core.find(c) != std::string::npos) o.avx512 = true;
  return o;
}

}  // namespace fp8lm::cli
