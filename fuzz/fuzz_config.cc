// Fuzzes the training configuration (src/train/config.h): the input as a TOML file, and its
// lines as `--set section.key=value` overrides (all in order over the parsed or default
// configuration, and each alone over the defaults). Every configuration that is accepted
// must validate, and its to_toml() text must parse back to the same values.
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"
#include "fuzz_common.h"
#include "train/config.h"

namespace {

#define FUZZ_SAME_FIELD(f) FUZZ_CHECK(a.f == b.f, "round trip changes " #f "\n" + text)

void check_same(const fp8lm::TrainConfig& a, const fp8lm::TrainConfig& b,
                const std::string& text) {
  FUZZ_SAME_FIELD(preset);
  FUZZ_SAME_FIELD(n_layer);
  FUZZ_SAME_FIELD(n_head);
  FUZZ_SAME_FIELD(n_embd);
  FUZZ_SAME_FIELD(seq_len);
  FUZZ_SAME_FIELD(train_path);
  FUZZ_SAME_FIELD(val_path);
  FUZZ_SAME_FIELD(tokenizer);
  FUZZ_SAME_FIELD(tokenizer_dir);
  FUZZ_SAME_FIELD(batch_size);
  FUZZ_SAME_FIELD(grad_accum);
  FUZZ_SAME_FIELD(steps);
  FUZZ_SAME_FIELD(lr);  // doubles: == (validation keeps NaN out; -0 and 0 are the same)
  FUZZ_SAME_FIELD(min_lr);
  FUZZ_SAME_FIELD(warmup_steps);
  FUZZ_SAME_FIELD(weight_decay);
  FUZZ_SAME_FIELD(beta1);
  FUZZ_SAME_FIELD(beta2);
  FUZZ_SAME_FIELD(grad_clip);
  FUZZ_SAME_FIELD(eval_every);
  FUZZ_SAME_FIELD(eval_batches);
  FUZZ_SAME_FIELD(checkpoint_every);
  FUZZ_SAME_FIELD(seed);
  FUZZ_SAME_FIELD(init_from);
  FUZZ_SAME_FIELD(out_dir);
  FUZZ_SAME_FIELD(threads);
  FUZZ_SAME_FIELD(comm_timeout);
  FUZZ_SAME_FIELD(tp);
  FUZZ_SAME_FIELD(sequence);
  FUZZ_SAME_FIELD(gather);
  FUZZ_SAME_FIELD(wire);
  FUZZ_SAME_FIELD(pp);
  FUZZ_SAME_FIELD(pp_wire);
  FUZZ_SAME_FIELD(level);
  FUZZ_SAME_FIELD(recipe);
  FUZZ_SAME_FIELD(amax_window);
  FUZZ_SAME_FIELD(margin);
  FUZZ_SAME_FIELD(grad_scaling);
  FUZZ_SAME_FIELD(mx_grad_format);
  FUZZ_SAME_FIELD(master_format);
  FUZZ_SAME_FIELD(m1_format);
  FUZZ_SAME_FIELD(m2_format);
  FUZZ_SAME_FIELD(telemetry_every);
  FUZZ_SAME_FIELD(what_if);
  FUZZ_SAME_FIELD(underflow_alarm);
  FUZZ_SAME_FIELD(saturation_alarm);
  FUZZ_SAME_FIELD(kurtosis_alarm);
  FUZZ_SAME_FIELD(loss_spike_alarm);
  FUZZ_SAME_FIELD(stop_on_alarm);
  FUZZ_SAME_FIELD(objective);
  FUZZ_SAME_FIELD(beta);
  FUZZ_SAME_FIELD(samples);
  FUZZ_SAME_FIELD(clip);
  FUZZ_SAME_FIELD(kl);
  FUZZ_SAME_FIELD(temperature);
  FUZZ_SAME_FIELD(max_new_tokens);
  FUZZ_SAME_FIELD(reward_command);
  FUZZ_SAME_FIELD(lora_rank);
  FUZZ_SAME_FIELD(lora_alpha);
  FUZZ_SAME_FIELD(lora_targets);
}

// An accepted configuration: validates, and survives to_toml() and parsing back.
void check_accepted(const fp8lm::TrainConfig& cfg) {
  try {
    cfg.validate();
  } catch (const fp8lm::Error& e) {
    fuzz::fail_property("an accepted configuration validates", __FILE__, __LINE__, e.what());
  }
  const std::string text = cfg.to_toml();
  fp8lm::TrainConfig back;
  try {
    back = fp8lm::parse_train_config(text, "round-trip.toml");
  } catch (const fp8lm::Error& e) {
    fuzz::fail_property("to_toml() output parses", __FILE__, __LINE__,
                        std::string(e.what()) + "\n" + text);
  }
  check_same(cfg, back, text);
  fuzz::consume(cfg.model().num_params());
}

std::vector<std::string> lines_of(std::string_view text) {
  std::vector<std::string> lines;
  while (!text.empty() && lines.size() < 64) {
    const size_t nl = text.find('\n');
    lines.emplace_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

}  // namespace

FUZZ_NUMBER_MUTATOR()

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  fp8lm::TrainConfig cfg;
  try {
    cfg = fp8lm::parse_train_config(text, "fuzz.toml");
    check_accepted(cfg);
  } catch (const fp8lm::Error& e) {
    fuzz::consume(std::strlen(e.what()));
    cfg = fp8lm::TrainConfig{};
  }

  const std::vector<std::string> lines = lines_of(text);
  try {
    fp8lm::apply_overrides(cfg, lines);
    check_accepted(cfg);
  } catch (const fp8lm::Error& e) {
    fuzz::consume(std::strlen(e.what()));
  }
  for (const std::string& line : lines) {
    fp8lm::TrainConfig one;
    try {
      fp8lm::apply_overrides(one, {line});
      check_accepted(one);
    } catch (const fp8lm::Error& e) {
      fuzz::consume(std::strlen(e.what()));
    }
  }
  return 0;
}
