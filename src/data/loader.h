// Batches of inputs and targets [B·T] for training and evaluation: windows of a token file
// (pre-training), or whole examples of an example file (fine-tuning, targets < 0 where the
// loss does not apply).
//
// Token files. Training: B windows of T+1 tokens whose starts are a pure function of (seed, step, rank,
// row) — a counter-based hash, so any step's batch can be produced again (exact resume) and
// ranks draw different windows. Evaluation: batch j is the contiguous span
// [j·B·T, j·B·T + B·T + 1), inputs all but its last token, targets shifted by one — windows
// any implementation can reproduce.
#pragma once

#include <cstddef>
#include <cstdint>

#include <memory>
#include <string>
#include <vector>

#include "data/example_file.h"
#include "data/token_file.h"

namespace fp8lm {

// The order of n items in epoch `epoch`: Fisher–Yates on a counter-based hash of (seed,
// epoch), the same on every platform (exact resume).
void epoch_permutation(size_t n, uint64_t seed, uint64_t epoch, std::vector<uint32_t>& out);

class Batches {
 public:
  virtual ~Batches() = default;
  // Training batch `index` (a pure function of it and the seed: exact resume).
  virtual void train_batch(int64_t index, int32_t* inputs, int32_t* targets) const = 0;
  // Number of evaluation batches, and batch j of them (the same on every call).
  virtual size_t eval_batches() const = 0;
  virtual void eval_batch(size_t j, int32_t* inputs, int32_t* targets) const = 0;
  // Whether targets may be < 0 (ignored): the loss is then the mean over the others.
  virtual bool masked() const = 0;
  // Whether rows 2i and 2i + 1 of every batch are a preference pair (chosen, rejected).
  virtual bool pairs() const { return false; }
};

class DataLoader : public Batches {
 public:
  // Throws Error when the file has fewer than T + 1 tokens.
  DataLoader(const TokenFile& file, size_t B, size_t T, uint64_t seed, int rank = 0);
  // inputs, targets: [B·T].
  void train_batch(int64_t step, int32_t* inputs, int32_t* targets) const override;
  // Number of whole evaluation batches in the file.
  size_t eval_batches() const override;
  void eval_batch(size_t j, int32_t* inputs, int32_t* targets) const override;
  bool masked() const override { return false; }

 private:
  const TokenFile& file_;
  size_t B_, T_;
  uint64_t seed_;
  int rank_;
};

// Example files: each row one example (no packing), its tokens then padding; the target of
// position t is token t + 1 where the mask marks it, else −1 (the prompt, the padding).
// Training: rows k = index·B + b walk the examples in a new shuffled order each epoch
// (seed, epoch); evaluation: batch j holds examples [j·B, j·B + B) in file order, the last
// batch padded with empty rows. Preference pairs are shuffled as pairs (B must be even).
class ExampleLoader : public Batches {
 public:
  // Throws Error naming the file and example when an example is longer than T + 1 tokens.
  ExampleLoader(const ExampleFile& file, size_t B, size_t T, uint64_t seed);
  void train_batch(int64_t index, int32_t* inputs, int32_t* targets) const override;
  size_t eval_batches() const override;
  void eval_batch(size_t j, int32_t* inputs, int32_t* targets) const override;
  bool masked() const override { return true; }
  bool pairs() const override { return unit_ == 2; }

 private:
  void row(size_t example, int32_t* inputs, int32_t* targets) const;
  const std::vector<uint32_t>& order(uint64_t epoch) const;
  const ExampleFile& file_;
  size_t B_, T_;
  uint64_t seed_;
  size_t unit_;  // examples shuffled together: 1, or 2 for preference pairs
  mutable uint64_t epoch_ = ~uint64_t{0};  // the epoch whose order order_ holds
  mutable std::vector<uint32_t> order_;
};

// A training or validation file of either kind, validated against the vocabulary, and its
// batches of B × T.
class DataSource {
 public:
  DataSource(const std::string& path, int32_t vocab_size, size_t B, size_t T, uint64_t seed);
  const std::string& path() const { return path_; }
  const Batches& batches() const { return *batches_; }
  // Tokens in the file (all examples' tokens for an example file).
  size_t tokens() const;

 private:
  std::string path_;
  std::unique_ptr<TokenFile> tokens_;
  std::unique_ptr<ExampleFile> examples_;
  std::unique_ptr<Batches> batches_;
};

}  // namespace fp8lm
