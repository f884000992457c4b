// Memory accounting: every tensor allocation is tagged with a category, and current and
// peak bytes are kept per category (and in total). Bytes-per-parameter figures are read
// from here, never computed from formulas.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fp8lm {

enum class MemCategory : uint8_t {
  kWeights,        // working weights (e.g. E4M3 copies used by GEMMs)
  kMaster,         // master weights
  kGradients,      // weight gradients
  kOptimM1,        // Adam first moment
  kOptimM2,        // Adam second moment
  kActivations,    // saved activations
  kWorkspace,      // kernel scratch, I/O staging
  kCommunication,  // collective buffers
  kFrozen,         // frozen weights: the reference model of DPO/GRPO, LoRA's base
};
inline constexpr int kNumMemCategories = 9;

std::string_view mem_category_name(MemCategory c);

struct MemStats {
  int64_t current = 0;
  int64_t peak = 0;
};

// Thread-safe counters. reset_peaks() sets each peak to its current value.
MemStats mem_stats(MemCategory c);
MemStats mem_stats_total();
void mem_reset_peaks();

// Bytes this process can still take: MemAvailable, and the cgroup v2 limit when one is set
// (0 when neither can be read).
size_t available_memory_bytes();
// This process's resident set now (0 if unknown).
size_t resident_bytes();

// 64-byte aligned, accounted allocation. Returns nullptr only for bytes == 0;
// throws Error when the system is out of memory.
void* mem_alloc(size_t bytes, MemCategory c);
void mem_free(void* p, size_t bytes, MemCategory c);

// Owning, accounted byte buffer.
class Buffer {
 public:
  Buffer() = default;
  Buffer(size_t bytes, MemCategory c) : data_(mem_alloc(bytes, c)), bytes_(bytes), cat_(c) {}
  ~Buffer() { mem_free(data_, bytes_, cat_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : data_(o.data_), bytes_(o.bytes_), cat_(o.cat_) {
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      mem_free(data_, bytes_, cat_);
      data_ = o.data_;
      bytes_ = o.bytes_;
      cat_ = o.cat_;
      o.data_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  MemCategory category() const { return cat_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  MemCategory cat_ = MemCategory::kWorkspace;
};

}  // namespace fp8lm
