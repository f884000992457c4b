// GPT-2 in FP64 built from the reference ops (model/ref_ops.h): loss and every parameter
// gradient, for the tests of the FP32/BF16/FP8 model. Parameters are taken from GptParams
// (same layout; wte restricted to the vocab_size real rows).
#pragma once

#include <cstdint>
#include <vector>

#include "model/params.h"
#include "model/ref_ops.h"

namespace fp8lm::ref {

struct RefModel {
  GptConfig cfg;
  std::vector<Vec> p;  // one per ParamSpec, wte with vocab_size rows
  // The LM head's operands (lnf, wte, the logits' gradient) rounded to BF16 (through FP32, to
  // nearest even), as Gpt::set_lm_head(bf16) has them.
  bool bf16_head = false;

  explicit RefModel(const GptParams& params);
  // Mean loss over the B·T positions (targets < 0 count as zero), or with `weights` [B·T]
  // Σ_t weights[t] · loss_t; grads (if non-null) gets one Vec per parameter.
  double loss(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets, size_t B,
              size_t T, std::vector<Vec>* grads, const Vec* weights = nullptr) const;
  // Logits [B·T, V].
  Vec logits(const std::vector<int32_t>& tokens, size_t B, size_t T) const;
};

}  // namespace fp8lm::ref
