#include "data/token_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <vector>

#include "core/check.h"
#include "core/file.h"

namespace fp8lm {

TokenFile::TokenFile(const std::string& path, int32_t vocab_size)
    : path_(path), vocab_(vocab_size) {
  // O_NONBLOCK: a FIFO must not wait for a writer; it is refused below.
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail(path, S_ISDIR(st.st_mode) ? ": is a folder, not a token file" : ": not a regular file");
  }
  const size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes < kTokenFileHeaderBytes) {
    ::close(fd_);
    fd_ = -1;
    fail(path, ": too short for a token file header (", bytes, " bytes, need ",
         kTokenFileHeaderBytes, ")");
  }
  int32_t header[3];
  try {
    read_exact(0, header, sizeof header);
    if (header[0] != kTokenFileMagic)
      fail(path, ": bad magic ", header[0], " (a token file starts with ", kTokenFileMagic, ")");
    if (header[1] != kTokenFileVersion)
      fail(path, ": unsupported version ", header[1], " (expected ", kTokenFileVersion, ")");
    if (header[2] < 0) fail(path, ": negative token count ", header[2]);
    count_ = static_cast<size_t>(header[2]);
    const size_t want = kTokenFileHeaderBytes + count_ * sizeof(uint16_t);
    if (bytes != want)
      fail(path, ": header says ", count_, " tokens (", want, " bytes) but the file has ", bytes,
           " bytes");
    // Every token once, in chunks (read checks them against the vocabulary).
    std::vector<uint16_t> chunk(size_t{1} << 16);
    for (size_t i = 0; i < count_; i += chunk.size())
      read(i, std::min(chunk.size(), count_ - i), chunk.data());
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

TokenFile::~TokenFile() {
  if (fd_ >= 0) ::close(fd_);
}

void TokenFile::read_exact(size_t offset, void* out, size_t bytes) const {
  auto* p = static_cast<uint8_t*>(out);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd_, p, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path_, ": read failed: ", std::strerror(errno));
    if (n == 0) fail(path_, ": the file shrank while in use (truncated or replaced?)");
    p += n;
    offset += static_cast<size_t>(n);
    bytes -= static_cast<size_t>(n);
  }
}

void TokenFile::read(size_t first, size_t n, uint16_t* out) const {
  if (first > count_ || n > count_ - first)
    fail(path_, ": tokens ", first, "..", first + n, " past the end (", count_, " tokens)");
  read_exact(kTokenFileHeaderBytes + first * sizeof(uint16_t), out, n * sizeof(uint16_t));
  if (vocab_ > 0)
    for (size_t i = 0; i < n; ++i)
      if (out[i] >= vocab_)
        fail(path_, ": token ", out[i], " at position ", first + i,
             " is outside the vocabulary (", vocab_, ")");
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
