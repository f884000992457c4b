// Fuzzes a checkpoint's trainer.json (src/train/checkpoint.h) along both ways it is read:
//  - read_trainer_json, model_config_of, and scaling_from_json on every element of
//    "scaling" into a delayed-scaling ScalingMeta of window 16;
//  - read_trainer_state and restore_scaling, as resume, eval and sample do, into metas of
//    the recorded amax_window;
// then drives every loaded ScalingMeta (src/tensor/scaling.h) the way the next casts would,
// so a state that indexes its amax-history ring out of range shows up here (ASan, UBSan or
// libstdc++'s checked operator[]) rather than as memory corruption in a resumed run.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/check.h"
#include "fuzz_common.h"
#include "tensor/safetensors.h"
#include "tensor/scaling.h"
#include "train/checkpoint.h"

namespace {

void check_model(const nlohmann::json& t, const std::string& dir) {
  try {
    const fp8lm::GptConfig c = fp8lm::model_config_of(t, dir);
    try {
      c.validate();
    } catch (const fp8lm::Error& e) {
      fuzz::fail_property("model_config_of returns a valid configuration", __FILE__, __LINE__,
                          e.what());
    }
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

// Each element of t["scaling"] on its own, into a window-16 delayed meta.
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
    fuzz::consume(fp8lm::scaling_to_json(meta).dump().size());
    drive(meta);
  }
}

// The whole file as resume reads it, then every state into a meta of the recorded window.
void check_state(const std::string& dir) {
  fp8lm::TrainerState s;
  try {
    s = fp8lm::read_trainer_state(dir);
  } catch (const fp8lm::Error& e) {
    fuzz::consume(std::strlen(e.what()));
    return;
  }
  FUZZ_CHECK(s.amax_window >= 1 && s.scaling.is_array());
  if (s.scaling.size() > 64) return;
  fp8lm::ScalingRecipe recipe;
  recipe.timing = s.recipe == "jit" ? fp8lm::ScalingTiming::kJustInTime
                                    : fp8lm::ScalingTiming::kDelayed;
  recipe.window = s.amax_window;
  recipe.margin = s.margin;
  std::vector<fp8lm::ScalingMeta> metas(s.scaling.size(), fp8lm::ScalingMeta(recipe));
  std::vector<fp8lm::ScalingMeta*> ptrs;
  for (fp8lm::ScalingMeta& m : metas) ptrs.push_back(&m);
  try {
    fp8lm::restore_scaling(s, ptrs, dir);
  } catch (const fp8lm::Error& e) {
    fuzz::consume(std::strlen(e.what()));
    return;
  }
  // The state written back is the state read.
  const nlohmann::json again = fp8lm::trainer_json(s);
  fuzz::consume(again.dump().size());
  for (fp8lm::ScalingMeta& m : metas) drive(m);
}

}  // namespace

FUZZ_NUMBER_MUTATOR()

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Named like a checkpoint folder, so read_trainer_state checks "step" against it, with
  // the optimizer file it compares level and step with (O2, 100 steps: as the seeds).
  static const std::string dir = [] {
    const std::string d = fuzz::scratch_dir() + "/step-100";
    std::filesystem::create_directories(d);
    fp8lm::write_safetensors(d + "/optimizer.safetensors", {},
                             {{"level", "O2"}, {"steps", "98"}, {"skipped", "2"}});
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
  // Resume stops at a bad model section; here the scaling states are fuzzed regardless.
  check_model(t, dir);
  check_scaling(t, dir + "/trainer.json");
  check_state(dir);
  return 0;
}
