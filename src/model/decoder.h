// Incremental decoding with a key/value cache: the FP32 forward of GPT-2 for new tokens only,
// each attending to the keys and values its row's earlier tokens left in the cache. What
// sampling needs (`fp8lm sample`, completions): a new token costs one pass over the weights
// and its row's cached positions, not a whole window's forward and T·V logits.
// Linear layers and the LM head go through kernels::gemm, attention is a direct loop per new
// token and head. Every new token's arithmetic is its own (GEMM rows are independent), so how
// tokens are grouped into calls and rows changes no bit of the logits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/params.h"
#include "tensor/tensor.h"

namespace fp8lm {

class GptDecoder {
 public:
  // Reads the FP32 values of `params` (unsharded, one process) at every call; `rows`
  // sequences are decoded side by side, each up to `positions` tokens (0: the model's
  // seq_len; at most seq_len). The cache holds L · rows · positions keys and values.
  GptDecoder(const GptParams& params, size_t rows, size_t positions = 0);

  size_t rows() const { return rows_; }
  size_t capacity() const { return T_; }  // positions per row
  size_t length(size_t row) const { return length_[row]; }
  // Forgets row `row`'s tokens: its next token is at position 0 again.
  void reset(size_t row);

  // Appends tokens[r] to row r (any count per row; rows past tokens.size() get none) and
  // writes, for each row that got tokens, the next-token logits after its last new one into
  // logits[r·V … r·V + V) (V = vocab_size; other rows' logits are left as they are).
  // Throws Error when a row would exceed capacity() or a token is outside the vocabulary.
  void append(const std::vector<std::vector<int32_t>>& tokens, float* logits);

 private:
  const GptParams& params_;
  size_t rows_, T_, C_, NH_, L_, V_;
  std::vector<size_t> length_;
  Tensor k_cache_, v_cache_;  // [L, rows, T, C] each
};

}  // namespace fp8lm
