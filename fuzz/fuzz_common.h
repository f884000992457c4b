// Shared by the fuzz targets: a scratch folder of the process's own for APIs that read a
// file by path, and FUZZ_CHECK for properties the code under test must keep. A failed
// FUZZ_CHECK aborts, which libFuzzer reports as a crash with the input saved as an artifact,
// exactly like an ASan or UBSan report.
//
// Convention in every target: fp8lm::Error is the one way to reject an input. Any other
// exception escapes LLVMFuzzerTestOneInput, std::terminate aborts, and that is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

// libFuzzer's own mutation, for custom mutators to fall back on.
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace fuzz {

// Prints what failed and aborts (a finding).
[[noreturn]] inline void fail_property(const char* what, const char* file, int line,
                                       const std::string& detail = {}) {
  std::fprintf(stderr, "\n==fuzz== property violated at %s:%d: %s\n", file, line, what);
  if (!detail.empty()) std::fprintf(stderr, "==fuzz== %s\n", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

namespace detail {
inline std::string& scratch_path() {
  static std::string path;
  return path;
}
inline void remove_scratch() {
  std::error_code ec;
  if (!scratch_path().empty()) std::filesystem::remove_all(scratch_path(), ec);
}
}  // namespace detail

// $TMPDIR/fp8lm-fuzz-<pid>: made on first use, removed at a normal exit (a crash leaves it,
// which is why scripts/fuzz.sh gives each run a TMPDIR of its own and removes that).
inline const std::string& scratch_dir() {
  std::string& path = detail::scratch_path();
  if (path.empty()) {
    std::error_code ec;
    std::filesystem::path base = std::filesystem::temp_directory_path(ec);
    if (ec) base = "/tmp";
    const std::filesystem::path dir = base / ("fp8lm-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir, ec);
    if (ec) fail_property("scratch folder can be made", __FILE__, __LINE__, dir.string());
    path = dir.string();
    std::atexit(detail::remove_scratch);
  }
  return path;
}

// Replaces the file at `path` with exactly these bytes.
inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) fail_property("scratch file can be opened", __FILE__, __LINE__, path);
  const bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  if (std::fclose(f) != 0 || !ok)
    fail_property("scratch file can be written", __FILE__, __LINE__, path);
}

// Keeps a value alive so reads of tensor or token bytes are not optimised away.
template <typename T>
inline void consume(const T& v) {
  static volatile T sink;
  sink = v;
}

// A mutation for text formats whose bugs hide behind values rather than syntax (JSON,
// TOML): replaces one decimal number of the input with a boundary value (of int, int64,
// uint64, double's exact integers, small windows) or a neighbour of the old one. Coverage
// cannot lead the fuzzer there by itself, since no branch compares most of these values.
// Falls back on libFuzzer's mutation when the input has no number.
inline size_t mutate_number(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  static const char* const kValues[] = {
      "0", "1", "-1", "2", "7", "8", "15", "16", "17", "31", "32", "33", "63", "64", "255",
      "256", "1023", "1024", "1025", "65535", "65536", "16777216", "16777217",
      "2147483647", "2147483648", "-2147483648", "-2147483649", "4294967295", "4294967296",
      "9007199254740992", "9007199254740993", "-9007199254740993", "9223372036854775807",
      "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
      "18446744073709551615", "18446744073709551616", "0.5", "-0.0", "1e-45", "1e38",
      "3.5e38", "1e300", "-1e300", "1e400", "inf", "nan"};
  std::minstd_rand rng(seed);
  std::vector<std::pair<size_t, size_t>> spans;  // [begin, end) of each -?[0-9]+ run
  for (size_t i = 0; i < size;) {
    if (data[i] < '0' || data[i] > '9') {
      ++i;
      continue;
    }
    const size_t begin = i > 0 && data[i - 1] == '-' ? i - 1 : i;
    while (i < size && data[i] >= '0' && data[i] <= '9') ++i;
    spans.emplace_back(begin, i);
  }
  if (spans.empty()) return LLVMFuzzerMutate(data, size, max_size);
  const auto [b, e] = spans[rng() % spans.size()];
  std::string value;
  if (rng() % 4 == 0) {  // a neighbour: old value +-1 (short numbers only)
    const std::string old(reinterpret_cast<const char*>(data) + b, e - b);
    if (old.size() < 18) value = std::to_string(std::stoll(old) + (rng() % 2 ? 1 : -1));
  }
  if (value.empty()) value = kValues[rng() % (sizeof kValues / sizeof kValues[0])];
  const size_t new_size = size - (e - b) + value.size();
  if (new_size > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::memmove(data + b + value.size(), data + e, size - e);
  std::memcpy(data + b, value.data(), value.size());
  return new_size;
}

}  // namespace fuzz

// Defines the target's custom mutator: a quarter of the mutations are mutate_number, the
// rest libFuzzer's own (with its dictionary).
#define FUZZ_NUMBER_MUTATOR()                                                            \
  extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, \
                                            unsigned seed) {                             \
    if (seed % 4 == 0) return ::fuzz::mutate_number(data, size, max_size, seed / 4);     \
    return LLVMFuzzerMutate(data, size, max_size);                                       \
  }

#define FUZZ_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond)) [[unlikely]]                                                  \
      ::fuzz::fail_property(#cond, __FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__); \
  } while (0)
