// File helpers: read-only memory maps and atomic writes (temp file, fsync, rename), so a
// crash mid-write never leaves a half-written file under the final name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace fp8lm {

// A read-only memory map of a whole file. Errors name the file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Gives back the pages wholly inside [p, p + bytes) (a part of this map that was read and is
  // not needed soon): they leave the process's resident set and are read again from the
  // file if touched. Reading a large file tensor by tensor then never holds all of it.
  void evict(const void* p, size_t bytes) const;

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// The whole of a regular file, read without blocking on FIFOs or devices: anything that is
// not a regular file (a folder, a FIFO, /dev/zero), or is larger than max_bytes, is an
// Error naming the file.
std::string read_text_file(const std::string& path, size_t max_bytes = size_t{1} << 30);

// Makes a rename or creation inside `dir` durable (best effort where the filesystem
// refuses directory opens).
void fsync_dir(const std::string& dir);

// Streams output into `path` atomically: `fill` writes through the callback it is given;
// the data goes to a temporary file beside `path`, which is fsynced and then renamed over
// `path` (and the directory fsynced). On any error the temporary file is removed and
// `path` is left untouched.
using WriteFn = std::function<void(const void* data, size_t bytes)>;
void write_file_atomic(const std::string& path, const std::function<void(const WriteFn&)>& fill);
// The same for a text already in memory.
void write_text_atomic(const std::string& path, const std::string& text);

// A 64-bit fingerprint of a file's bytes (FNV-1a over 8-byte words, the tail bytewise): tells
// whether a file is still the one a run recorded. Errors name the file.
uint64_t file_fingerprint(const std::string& path);

}  // namespace fp8lm
