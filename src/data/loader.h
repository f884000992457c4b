// Batches from a token file.
// Training: B windows of T+1 tokens whose starts are a pure function of (seed, step, rank,
// row) — a counter-based hash, so any step's batch can be produced again (exact resume) and
// ranks draw different windows. Evaluation: batch j is the contiguous span
// [j·B·T, j·B·T + B·T + 1), inputs all but its last token, targets shifted by one — windows
// any implementation can reproduce.
#pragma once

#include <cstddef>
#include <cstdint>

#include "data/token_file.h"

namespace fp8lm {

class DataLoader {
 public:
  // Throws Error when the file has fewer than T + 1 tokens.
  DataLoader(const TokenFile& file, size_t B, size_t T, uint64_t seed, int rank = 0);
  // inputs, targets: [B·T].
  void train_batch(int64_t step, int32_t* inputs, int32_t* targets) const;
  // Number of whole evaluation batches in the file.
  size_t eval_batches() const;
  void eval_batch(size_t j, int32_t* inputs, int32_t* targets) const;

 private:
  const TokenFile& file_;
  size_t B_, T_;
  uint64_t seed_;
  int rank_;
};

}  // namespace fp8lm
