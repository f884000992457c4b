#include "model/lora.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace fp8lm {

uint8_t parse_lora_targets(std::string_view text) {
  if (text == "all") return kLoraAll;
  uint8_t mask = 0;
  size_t i = 0;
  while (i <= text.size()) {
    const size_t j = std::min(text.find(',', i), text.size());
    const std::string_view name = text.substr(i, j - i);
    int found = -1;
    for (int t = 0; t < 4; ++t)
      if (name == kLoraTargetNames[t]) found = t;
    if (found < 0)
      fail("finetune.lora_targets = '", text, "': '", name, "' is not one of attn.c_attn, "
           "attn.c_proj, mlp.c_fc, mlp.c_proj (comma-separated), or all");
    if ((mask >> found) & 1) fail("finetune.lora_targets = '", text, "': ", name, " twice");
    mask = static_cast<uint8_t>(mask | (1 << found));
    i = j + 1;
  }
  return mask;
}

std::string lora_targets_text(uint8_t targets) {
  if (targets == kLoraAll) return "all";
  std::string s;
  for (int t = 0; t < 4; ++t) {
    if (!((targets >> t) & 1)) continue;
    if (!s.empty()) s += ',';
    s += kLoraTargetNames[t];
  }
  return s;
}

std::vector<ParamSpec> lora_layout(const GptConfig& cfg, const LoraSpec& lora) {
  cfg.validate();
  FP8LM_CHECK(lora.on() && lora.targets != 0 && (lora.targets & ~kLoraAll) == 0,
              "lora_layout: rank ", lora.rank, ", targets ", int(lora.targets));
  const int64_t C = cfg.n_embd, r = lora.rank;
  const int64_t shapes[4][2] = {{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}};  // [in, out]
  std::vector<ParamSpec> specs;
  size_t offset = 0;
  auto add = [&](std::string name, Shape shape) {
    specs.push_back({std::move(name), shape, offset, false, Split::kNone, shape});
    offset += static_cast<size_t>(shape.numel());
  };
  for (int l = 0; l < cfg.n_layer; ++l)
    for (int t = 0; t < 4; ++t) {
      if (!((lora.targets >> t) & 1)) continue;
      const int64_t in = shapes[t][0], out = shapes[t][1];
      if (r > std::min(in, out))
        fail("finetune.lora_rank = ", r, ": more than ", kLoraTargetNames[t], "'s ",
             std::min(in, out), " (the rank of a ", in, "x", out, " weight)");
      const std::string p = "h." + std::to_string(l) + "." + kLoraTargetNames[t] + ".";
      add(p + "lora_a", {in, r});
      add(p + "lora_b", {r, out});
    }
  return specs;
}

void LoraInit::next(const ParamSpec& s, float* out) {
  const size_t n = s.numel();
  if (s.name.ends_with("lora_b")) {
    std::fill(out, out + n, 0.0f);
    return;
  }
  const float bound = 1.0f / std::sqrt(static_cast<float>(s.shape[0]));
  std::uniform_real_distribution<float> d(-bound, bound);
  for (size_t i = 0; i < n; ++i) out[i] = d(rng_);
}

}  // namespace fp8lm
