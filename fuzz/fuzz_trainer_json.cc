// Fuzzes a checkpoint's trainer.json as resume and evaluation read it (src/train/checkpoint.h):
// read_trainer_json, model_config_of, and scaling_from_json for every saved scaling state,
// then drives each loaded ScalingMeta (src/tensor/scaling.h) the way the next casts would,
// so a state that indexes its amax-history ring out of range shows up here (ASan, UBSan or
// libstdc++'s checked operator[]) rather than as memory corruption in a resumed run.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "core/check.h"
#include "fuzz_common.h"
#include "tensor/scaling.h"
#include "train/checkpoint.h"

namespace {

void check_model(const nlohmann::json& t, const std::string& dir) {
  try {
    const fp8lm::GptConfig c = fp8lm::model_config_of(t, dir);
    c.validate();  // model_config_of validates: must not throw now
    fuzz::consume(c.num_params());
    FUZZ_CHECK(c.padded_vocab() % 64 == 0 && c.padded_vocab() >= c.vocab_size);
  } catch (const fp8lm::Error& e) {
    fuzz::consume(std::strlen(e.what()));
  }
}

// The next casts of a delayed-scaling tensor: decide, scale from the history, record.
void drive(fp8lm::ScalingMeta& m) {
  const int window = m.recipe.window;
  // As the meta keeps it: entries [0, filled) are valid, so while filling, pos == filled.
  const bool consistent = m.history_filled >= 0 && m.history_filled <= window &&
                          (m.history_filled == window || m.history_pos == m.history_filled);
  for (int i = 0; i < 3; ++i) {
    fuzz::consume(m.needs_jit());
    m.set_scale_from_history();
    fuzz::consume(m.history_max());
    m.record_amax(1.0f);
  }
  m.record_amax(std::numeric_limits<float>::infinity());
  FUZZ_CHECK(m.needs_jit(), "a non-finite amax forces the next cast to be just-in-time");
  m.record_amax(0.0f);
  m.set_scale_from_history();
  // Whatever was loaded, recording finite amaxes leaves a state inside the ring.
  FUZZ_CHECK(m.history_pos >= 0 && m.history_pos < window,
             "history_pos " + std::to_string(m.history_pos) + " after recording");
  FUZZ_CHECK(m.history_filled >= 0 && m.history_filled <= window,
             "history_filled " + std::to_string(m.history_filled) + " after recording");
  if (consistent)
    FUZZ_CHECK(m.history_max() >= 1.0f, "the amaxes just recorded are in the history");
  m.set_scale_from_amax(1.0f);
  FUZZ_CHECK(std::isfinite(m.scale) && m.scale > 0 && m.scale_inv == 1.0f / m.scale);
}

void check_scaling(const nlohmann::json& t, const std::string& where) {
  if (!t.is_object()) return;
  const auto it = t.find("scaling");
  if (it == t.end() || !it->is_array()) return;
  size_t n = 0;
  for (const nlohmann::json& elem : *it) {
    if (++n > 64) break;  // the model has a few dozen; more only slows the fuzzer down
    fp8lm::ScalingRecipe recipe;
    recipe.timing = fp8lm::ScalingTiming::kDelayed;
    recipe.window = 16;
    fp8lm::ScalingMeta meta(recipe);
    try {
      fp8lm::scaling_from_json(elem, meta, where);
    } catch (const fp8lm::Error& e) {
      fuzz::consume(std::strlen(e.what()));
      continue;
    }
    FUZZ_CHECK(meta.amax_history.size() == 16, "the loaded history keeps the run's window");
    // A loaded state goes back out unchanged (the next checkpoint writes it).
    const nlohmann::json again = fp8lm::scaling_to_json(meta);
    fuzz::consume(again.dump().size());
    drive(meta);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = fuzz::scratch_dir() + "/checkpoint";
    std::filesystem::create_directories(d);
    return d;
  }();
  fuzz::write_bytes(dir + "/trainer.json", data, size);
  nlohmann::json t;
  try {
    t = fp8lm::read_trainer_json(dir);
  } catch (const fp8lm::Error& e) {
    fuzz::consume(std::strlen(e.what()));
    return 0;
  }
  // Resume reads the model first and stops there on an error; the scaling states are
  // still fuzzed on their own, so a bad model section does not hide them.
  check_model(t, dir);
  check_scaling(t, dir + "/trainer.json");
  return 0;
}
