#include "core/memory.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <new>
#include <string>

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
      "optim_m2", "activations", "workspace", "communication", "frozen"};
  return kNames[static_cast<int>(c)];
}

size_t available_memory_bytes() {
  size_t avail = 0;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  size_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") {
      avail = kib * 1024;
      break;
    }
  }
  // A container's own limit can be lower than the machine's free memory.
  std::ifstream max_file("/sys/fs/cgroup/memory.max"), cur_file("/sys/fs/cgroup/memory.current");
  std::string max_text;
  size_t current = 0;
  if (max_file >> max_text && max_text != "max" && cur_file >> current) {
    const size_t limit = std::stoull(max_text);
    const size_t room = limit > current ? limit - current : 0;
    avail = avail == 0 ? room : std::min(avail, room);
  }
  return avail;
}

size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
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
