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
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

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
// which is why scripts/fuzz.sh points TMPDIR into the build folder).
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

}  // namespace fuzz

#define FUZZ_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond)) [[unlikely]]                                                  \
      ::fuzz::fail_property(#cond, __FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__); \
  } while (0)
