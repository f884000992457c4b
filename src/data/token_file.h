// Token files in llm.c's format: a header of 256 int32 (magic 20240520, version 1, token
// count, zeros), then `count` uint16 tokens. Validated up front and read with pread, not a
// memory map: a file truncated or rewritten while a run reads it gives an Error naming it
// (a map would deliver SIGBUS), and every token read is checked against the vocabulary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>


namespace fp8lm {

inline constexpr int32_t kTokenFileMagic = 20240520;
inline constexpr int32_t kTokenFileVersion = 1;
inline constexpr size_t kTokenFileHeaderBytes = 256 * sizeof(int32_t);

class TokenFile {
 public:
  // Opens and validates `path`: a regular file, magic, version, count against the file
  // size, and (when vocab_size > 0) every token < vocab_size. Errors name the file.
  explicit TokenFile(const std::string& path, int32_t vocab_size = 0);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;
  const std::string& path() const { return path_; }
  size_t size() const { return count_; }
  // Tokens [first, first + n) into out; throws Error when the file no longer holds them or
  // one is outside the vocabulary.
  void read(size_t first, size_t n, uint16_t* out) const;

 private:
  void read_exact(size_t offset, void* out, size_t bytes) const;
  std::string path_;
  int fd_ = -1;
  size_t count_ = 0;
  int32_t vocab_ = 0;
};

// Writes `count` tokens, read from `src` in order by the callback, to `path` atomically.
void write_token_file(const std::string& path, size_t count,
                      const std::function<void(const std::function<void(const uint16_t*, size_t)>&)>& src);

}  // namespace fp8lm
