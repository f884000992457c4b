#include "model/config.h"

#include "core/check.h"

namespace fp8lm {
namespace {

struct Preset {
  const char* name;
  int n_layer, n_head, n_embd, seq_len, vocab_size;
};
constexpr Preset kPresets[] = {
    {"gpt2", 12, 12, 768, 1024, 50257},        {"gpt2-medium", 24, 16, 1024, 1024, 50257},
    {"gpt2-large", 36, 20, 1280, 1024, 50257}, {"gpt2-xl", 48, 25, 1600, 1024, 50257},
    {"d6", 6, 6, 384, 256, 50257},             {"tiny", 2, 2, 64, 64, 512},
};

}  // namespace

void GptConfig::validate() const {
  if (n_layer < 1 || n_layer > 1000) fail("model.n_layer = ", n_layer, ": must be 1..1000");
  if (n_head < 1) fail("model.n_head = ", n_head, ": must be >= 1");
  if (n_embd < 1 || n_embd % n_head != 0)
    fail("model.n_embd = ", n_embd, ": must be a positive multiple of model.n_head (", n_head,
         ")");
  if (seq_len < 1 || seq_len > 65536) fail("model.seq_len = ", seq_len, ": must be 1..65536");
  if (vocab_size < 1 || vocab_size > 1 << 24)
    fail("model.vocab_size = ", vocab_size, ": must be 1..16777216");
}

size_t GptConfig::num_params() const {
  const size_t C = static_cast<size_t>(n_embd), L = static_cast<size_t>(n_layer);
  const size_t per_layer = 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + 2 * C +
                           (C * 4 * C + 4 * C) + (4 * C * C + C);
  return static_cast<size_t>(vocab_size) * C + static_cast<size_t>(seq_len) * C +
         L * per_layer + 2 * C;
}

GptConfig gpt_preset(std::string_view name) {
  for (const Preset& p : kPresets)
    if (name == p.name) return {p.name, p.n_layer, p.n_head, p.n_embd, p.seq_len, p.vocab_size};
  std::string names;
  for (const Preset& p : kPresets) names += std::string(names.empty() ? "" : ", ") + p.name;
  fail("unknown model preset '", name, "' (known: ", names, ")");
}

}  // namespace fp8lm
