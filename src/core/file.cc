#include "core/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/check.h"

namespace fp8lm {

namespace {

// Opens `path` for reading without blocking (a FIFO would wait for a writer forever) and
// requires a regular file; returns the descriptor and its size.
int open_regular(const std::string& path, size_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, S_ISDIR(st.st_mode) ? ": is a folder, not a file" : ": not a regular file");
  }
  *size = static_cast<size_t>(st.st_size);
  return fd;
}

}  // namespace

std::string read_text_file(const std::string& path, size_t max_bytes) {
  size_t size = 0;
  const int fd = open_regular(path, &size);
  if (size > max_bytes) {
    ::close(fd);
    fail(path, ": ", size, " bytes, more than the limit of ", max_bytes);
  }
  std::string text(size, '\0');
  size_t got = 0;
  while (got < size) {
    const ssize_t n = ::read(fd, text.data() + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : 0;
      ::close(fd);
      fail(path, ": read failed", err != 0 ? std::string(": ") + std::strerror(err) : " (file shrank)");
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return text;
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = open_regular(path, &size_);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail(path, ": cannot map: ", std::strerror(err));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() { release(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

void MappedFile::evict(const void* p, size_t bytes) const {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(p), end = begin + bytes;
  const uintptr_t b = (begin + page - 1) / page * page, e = end / page * page;
  if (p == nullptr || e <= b) return;
  ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);  // advice: failure is harmless
}

void MappedFile::release() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some filesystems refuse directory opens
  ::fsync(fd);
  ::close(fd);
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&](const WriteFn& w) { w(text.data(), text.size()); });
}

void write_file_atomic(const std::string& path, const std::function<void(const WriteFn&)>& fill) {
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path final_path(path);
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, ": cannot create temporary file: ", std::strerror(errno));
  bool fd_open = true;
  try {
    fill([&](const void* data, size_t bytes) {
      const auto* p = static_cast<const uint8_t*>(data);
      while (bytes > 0) {
        const ssize_t n = ::write(fd, p, bytes);
        if (n < 0) {
          if (errno == EINTR) continue;
          fail(path, ": write failed: ", std::strerror(errno));
        }
        p += n;
        bytes -= static_cast<size_t>(n);
      }
    });
    if (::fsync(fd) != 0) fail(path, ": fsync failed: ", std::strerror(errno));
    fd_open = false;
    if (::close(fd) != 0) fail(path, ": close failed: ", std::strerror(errno));
  } catch (...) {
    if (fd_open) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": cannot rename temporary file into place: ", std::strerror(err));
  }
  fsync_dir(final_path.parent_path().string());
}

uint64_t file_fingerprint(const std::string& path) {
  const MappedFile f(path);
  constexpr uint64_t kPrime = 1099511628211ull;
  uint64_t h = 1469598103934665603ull ^ f.size();
  const size_t words = f.size() / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, f.data() + 8 * i, 8);
    h = (h ^ w) * kPrime;
  }
  for (size_t i = 8 * words; i < f.size(); ++i) h = (h ^ f.data()[i]) * kPrime;
  return h;
}

}  // namespace fp8lm
