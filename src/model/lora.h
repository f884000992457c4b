// LoRA adapters (docs/post_training.md, LoRA): a targeted Linear layer computes
// y = x·W + b + s·(x·A)·B with W and b frozen, A [in, r] and B [r, out] trained, s = alpha / r.
// B starts at zero (the adapted model starts as the base), A uniform in ±1/√in.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "model/params.h"

namespace fp8lm {

// The four Linear layers of a block, by their Hugging Face module names.
enum LoraTarget : uint8_t {
  kLoraAttn = 1,      // attn.c_attn
  kLoraAttnProj = 2,  // attn.c_proj
  kLoraFc = 4,        // mlp.c_fc
  kLoraMlpProj = 8,   // mlp.c_proj
  kLoraAll = 15,
};
inline constexpr const char* kLoraTargetNames[4] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                    "mlp.c_proj"};

struct LoraSpec {
  int rank = 0;  // 0: no adapters (full training)
  double alpha = 16;
  uint8_t targets = kLoraAll;
  bool on() const { return rank > 0; }
  float scale() const { return static_cast<float>(alpha / rank); }
};

// "all", or module names separated by commas ("attn.c_attn,mlp.c_fc"); throws Error naming
// finetune.lora_targets for anything else.
uint8_t parse_lora_targets(std::string_view text);
std::string lora_targets_text(uint8_t targets);

// The adapters of `cfg`, in block order and, per block, in the order of kLoraTargetNames:
// "h.L.<module>.lora_a" [in, r], then "h.L.<module>.lora_b" [r, out] (offsets into one flat
// buffer). Throws Error (naming finetune.lora_rank) when r exceeds a targeted layer's in or out.
std::vector<ParamSpec> lora_layout(const GptConfig& cfg, const LoraSpec& lora);

// Initial adapter values, one tensor at a time in layout order, deterministic in `seed`.
class LoraInit {
 public:
  explicit LoraInit(uint64_t seed) : rng_(seed) {}
  void next(const ParamSpec& s, float* out);

 private:
  std::mt19937_64 rng_;
};

}  // namespace fp8lm
