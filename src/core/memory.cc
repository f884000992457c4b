#include "core/memory.h"

#include <atomic>
#include <cstdlib>
#include <new>

#include "core/check.h"

namespace fp8lm {
namespace {

constexpr size_t kAlign = 64;
constexpr int kTotal = kNumMemCategories;  // slot for the total

struct Counter {
  std::atomic<int64_t> current{0};
  std::atomic<int64_t> peak{0};
};
Counter g_counters[kNumMemCategories + 1];

void raise_peak(Counter& c, int64_t now) {
  int64_t peak = c.peak.load(std::memory_order_relaxed);
  while (now > peak && !c.peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void account(MemCategory cat, int64_t delta) {
  for (int slot : {static_cast<int>(cat), kTotal}) {
    const int64_t now = g_counters[slot].current.fetch_add(delta) + delta;
    if (delta > 0) raise_peak(g_counters[slot], now);
  }
}

MemStats read(int slot) {
  return {g_counters[slot].current.load(), g_counters[slot].peak.load()};
}

}  // namespace

std::string_view mem_category_name(MemCategory c) {
  static constexpr std::string_view kNames[kNumMemCategories] = {
      "weights", "master",     "gradients", "optim_m1",
      "optim_m2", "activations", "workspace", "communication"};
  return kNames[static_cast<int>(c)];
}

MemStats mem_stats(MemCategory c) { return read(static_cast<int>(c)); }
MemStats mem_stats_total() { return read(kTotal); }

void mem_reset_peaks() {
  for (Counter& c : g_counters) c.peak.store(c.current.load());
}

void* mem_alloc(size_t bytes, MemCategory c) {
  if (bytes == 0) return nullptr;
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (p == nullptr)
    fail("out of memory allocating ", bytes, " bytes of ", mem_category_name(c));
  account(c, static_cast<int64_t>(bytes));
  return p;
}

void mem_free(void* p, size_t bytes, MemCategory c) {
  if (p == nullptr) return;
  std::free(p);
  account(c, -static_cast<int64_t>(bytes));
}

}  // namespace fp8lm
