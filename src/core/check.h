// Errors: fp8lm::Error for anything a user can cause (bad file, flag, config) and for
// violated preconditions at API boundaries. The CLI catches it and prints one line.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace fp8lm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}
[[noreturn]] void throw_check_failure(const char* file, int line, const char* func,
                                      const std::string& msg);
}  // namespace detail

// Throws Error(concat(parts...)): for failures the user caused; the message is the whole line.
template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(detail::concat(std::forward<Parts>(parts)...));
}

}  // namespace fp8lm

// Precondition at an API boundary: the message names the function and source location,
// because a failure here is a caller's bug rather than bad user input.
#define FP8LM_CHECK(cond, ...)                                                              \
  do {                                                                                      \
    if (!(cond)) [[unlikely]]                                                               \
      ::fp8lm::detail::throw_check_failure(__FILE__, __LINE__, __func__,                    \
                                           ::fp8lm::detail::concat("check failed: " #cond,  \
                                                                   ". " __VA_OPT__(, )      \
                                                                       __VA_ARGS__));       \
  } while (0)

