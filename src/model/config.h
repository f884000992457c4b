// GPT-2 model configuration and presets; compute modes (docs/numerics.md).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace fp8lm {

struct GptConfig {
  std::string preset;  // name it came from ("" when built by hand)
  int n_layer = 0;
  int n_head = 0;
  int n_embd = 0;
  int seq_len = 0;     // maximum T (rows of wpe)
  int vocab_size = 0;  // V; tensors use padded_vocab() rows so GEMMs see a multiple of 64

  int padded_vocab() const { return (vocab_size + 63) / 64 * 64; }
  // Throws Error naming the field when a value is out of range.
  void validate() const;
  // Number of parameters as Hugging Face counts them (unpadded vocabulary).
  size_t num_params() const;
};

// gpt2 (124M), gpt2-medium (350M), gpt2-large (774M), gpt2-xl (1.5B), and small ones:
// d6 (6 layers × 384, the default training run) and tiny (2 layers × 64, tests).
GptConfig gpt_preset(std::string_view name);


}  // namespace fp8lm
