#include "data/token_file.h"

#include <cstring>
#include <functional>

#include "core/check.h"

namespace fp8lm {

TokenFile::TokenFile(const std::string& path, int32_t vocab_size) : map_(path) {
  if (map_.size() < kTokenFileHeaderBytes)
    fail(path, ": too short for a token file header (", map_.size(), " bytes, need ",
         kTokenFileHeaderBytes, ")");
  int32_t header[3];
  std::memcpy(header, map_.data(), sizeof header);
  if (header[0] != kTokenFileMagic)
    fail(path, ": bad magic ", header[0], " (a token file starts with ", kTokenFileMagic, ")");
  if (header[1] != kTokenFileVersion)
    fail(path, ": unsupported version ", header[1], " (expected ", kTokenFileVersion, ")");
  if (header[2] < 0) fail(path, ": negative token count ", header[2]);
  count_ = static_cast<size_t>(header[2]);
  const size_t want = kTokenFileHeaderBytes + count_ * sizeof(uint16_t);
  if (map_.size() != want)
    fail(path, ": header says ", count_, " tokens (", want, " bytes) but the file has ",
         map_.size(), " bytes");
  if (vocab_size > 0) {
    const uint16_t* t = tokens();
    for (size_t i = 0; i < count_; ++i) {
      uint16_t v;
      std::memcpy(&v, t + i, sizeof v);
      if (v >= vocab_size)
        fail(path, ": token ", v, " at position ", i, " is outside the vocabulary (", vocab_size,
             ")");
    }
  }
}

void write_token_file(
    const std::string& path, size_t count,
    const std::function<void(const std::function<void(const uint16_t*, size_t)>&)>& src) {
  if (count > static_cast<size_t>(INT32_MAX)) fail(path, ": too many tokens (", count, ")");
  int32_t header[256] = {kTokenFileMagic, kTokenFileVersion, static_cast<int32_t>(count)};
  write_file_atomic(path, [&](const WriteFn& write) {
    write(header, sizeof header);
    size_t written = 0;
    src([&](const uint16_t* t, size_t n) {
      write(t, n * sizeof(uint16_t));
      written += n;
    });
    FP8LM_CHECK(written == count, path, ": wrote ", written, " tokens, announced ", count);
  });
}

}  // namespace fp8lm
