#include "core/check.h"

#include <filesystem>

namespace fp8lm::detail {

void throw_check_failure(const char* file, int line, const char* func, const std::string& msg) {
  throw Error(concat(msg, " [", std::filesystem::path(file).filename().string(), ":", line,
                     " in ", func, "]"));
}

}  // namespace fp8lm::detail
