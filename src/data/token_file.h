// Token files in llm.c's format: a header of 256 int32 (magic 20240520, version 1, token
// count, zeros), then `count` uint16 tokens. Read by memory map, validated up front.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "core/file.h"

namespace fp8lm {

inline constexpr int32_t kTokenFileMagic = 20240520;
inline constexpr int32_t kTokenFileVersion = 1;
inline constexpr size_t kTokenFileHeaderBytes = 256 * sizeof(int32_t);

class TokenFile {
 public:
  // Maps and validates `path`: magic, version, count against the file size, and (when
  // vocab_size > 0) every token < vocab_size. Errors name the file and the problem.
  explicit TokenFile(const std::string& path, int32_t vocab_size = 0);
  const std::string& path() const { return map_.path(); }
  size_t size() const { return count_; }
  const uint16_t* tokens() const {
    return reinterpret_cast<const uint16_t*>(map_.data() + kTokenFileHeaderBytes);
  }

 private:
  MappedFile map_;
  size_t count_ = 0;
};

// Writes `count` tokens, read from `src` in order by the callback, to `path` atomically.
void write_token_file(const std::string& path, size_t count,
                      const std::function<void(const std::function<void(const uint16_t*, size_t)>&)>& src);

}  // namespace fp8lm
