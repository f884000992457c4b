#include "data/loader.h"

#include <vector>

#include "core/check.h"

namespace fp8lm {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Tokens [start, start + T + 1): inputs all but the last, targets shifted by one.
void copy_window(const TokenFile& file, size_t start, size_t T, int32_t* in, int32_t* tgt) {
  std::vector<uint16_t> w(T + 1);
  file.read(start, T + 1, w.data());
  for (size_t t = 0; t < T; ++t) {
    in[t] = w[t];
    tgt[t] = w[t + 1];
  }
}

}  // namespace

DataLoader::DataLoader(const TokenFile& file, size_t B, size_t T, uint64_t seed, int rank)
    : file_(file), B_(B), T_(T), seed_(seed), rank_(rank) {
  if (file.size() < T + 1)
    fail(file.path(), ": ", file.size(), " tokens, fewer than one window of ", T + 1);
}

void DataLoader::train_batch(int64_t step, int32_t* inputs, int32_t* targets) const {
  const uint64_t span = file_.size() - T_;  // window starts 0 .. N − T − 1
  for (size_t b = 0; b < B_; ++b) {
    uint64_t h = splitmix64(seed_);
    h = splitmix64(h ^ static_cast<uint64_t>(step));
    h = splitmix64(h ^ (static_cast<uint64_t>(rank_) << 32 | b));
    copy_window(file_, h % span, T_, inputs + b * T_, targets + b * T_);
  }
}

size_t DataLoader::eval_batches() const {
  return file_.size() < B_ * T_ + 1 ? 0 : (file_.size() - 1) / (B_ * T_);
}

void DataLoader::eval_batch(size_t j, int32_t* inputs, int32_t* targets) const {
  FP8LM_CHECK(j < eval_batches(), "evaluation batch ", j, " past the end of ", file_.path());
  copy_window(file_, j * B_ * T_, B_ * T_, inputs, targets);
}

}  // namespace fp8lm
