#include "data/loader.h"

#include <algorithm>
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

namespace fp8lm {

ExampleLoader::ExampleLoader(const ExampleFile& file, size_t B, size_t T, uint64_t seed)
    : file_(file), B_(B), T_(T), seed_(seed), unit_(file.kind() == kPreferencePairs ? 2 : 1) {
  if (B % unit_ != 0)
    fail(file.path(), ": preference pairs need an even train.batch_size (a pair's two rows in "
         "one batch), got ", B);
  if (file.max_length() > T + 1)
    for (size_t i = 0; i < file.size(); ++i)
      if (file.tokens(i).size() > T + 1)
        fail(file.path(), ": example ", i, " has ", file.tokens(i).size(),
             " tokens, more than model.seq_len + 1 = ", T + 1);
}

void epoch_permutation(size_t n, uint64_t seed, uint64_t epoch, std::vector<uint32_t>& out) {
  out.resize(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint32_t>(i);
  const uint64_t base = splitmix64(splitmix64(seed) ^ epoch);
  for (size_t i = n; i > 1; --i) std::swap(out[i - 1], out[splitmix64(base ^ i) % i]);
}

const std::vector<uint32_t>& ExampleLoader::order(uint64_t epoch) const {
  if (epoch == epoch_) return order_;
  epoch_permutation(file_.size() / unit_, seed_, epoch, order_);
  epoch_ = epoch;
  return order_;
}

void ExampleLoader::row(size_t example, int32_t* inputs, int32_t* targets) const {
  const auto t = file_.tokens(example);
  const auto m = file_.mask(example);
  const size_t n = t.size() - 1;  // positions with a next token
  for (size_t k = 0; k < T_; ++k) {
    inputs[k] = k < n ? t[k] : t[0];  // padding: never attended by the positions before it
    targets[k] = k < n && m[k + 1] ? t[k + 1] : -1;
  }
}

void ExampleLoader::train_batch(int64_t index, int32_t* inputs, int32_t* targets) const {
  // The shuffled units are examples, or pairs (chosen, rejected) kept side by side.
  const uint64_t n = file_.size() / unit_;
  for (size_t b = 0; b < B_; ++b) {
    const uint64_t i = static_cast<uint64_t>(index) * B_ + b, k = i / unit_;
    row(order(k / n)[k % n] * unit_ + i % unit_, inputs + b * T_, targets + b * T_);
  }
}

size_t ExampleLoader::eval_batches() const { return (file_.size() + B_ - 1) / B_; }

void ExampleLoader::eval_batch(size_t j, int32_t* inputs, int32_t* targets) const {
  FP8LM_CHECK(j < eval_batches(), "evaluation batch ", j, " past the end of ", file_.path());
  for (size_t b = 0; b < B_; ++b) {
    if (j * B_ + b < file_.size()) {
      row(j * B_ + b, inputs + b * T_, targets + b * T_);
    } else {
      std::fill(inputs + b * T_, inputs + (b + 1) * T_, 0);
      std::fill(targets + b * T_, targets + (b + 1) * T_, -1);
    }
  }
}

DataSource::DataSource(const std::string& path, int32_t vocab_size, size_t B, size_t T,
                       uint64_t seed)
    : path_(path) {
  if (is_example_file(path)) {
    examples_ = std::make_unique<ExampleFile>(path, vocab_size);
    batches_ = std::make_unique<ExampleLoader>(*examples_, B, T, seed);
  } else {
    tokens_ = std::make_unique<TokenFile>(path, vocab_size);
    batches_ = std::make_unique<DataLoader>(*tokens_, B, T, seed);
  }
}

size_t DataSource::tokens() const {
  return tokens_ ? tokens_->size() : examples_->total_tokens();
}

}  // namespace fp8lm
