#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "core/file.h"
#include "dist/world.h"
#include "kernels/cast.h"
#include "tensor/safetensors.h"

namespace fp8lm {
namespace fs = std::filesystem;

namespace {

void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&](const WriteFn& w) { w(text.data(), text.size()); });
}

}  // namespace

nlohmann::json scaling_to_json(const ScalingMeta& m) {
  return {{"scale", m.scale},
          {"scale_inv", m.scale_inv},
          {"history", m.amax_history},
          {"filled", m.history_filled},
          {"pos", m.history_pos},
          {"jit_next", m.jit_next},
          {"counter", m.counter},
          {"zero_amax", m.zero_amax},
          {"nonfinite_amax", m.nonfinite_amax}};
}

void scaling_from_json(const nlohmann::json& j, ScalingMeta& m, const std::string& where) {
  try {
    const auto h = j.at("history").get<std::vector<float>>();
    if (h.size() != m.amax_history.size())
      fail(where, ": amax history of ", h.size(), " entries, the run uses ", m.amax_history.size());
    m.scale = j.at("scale").get<float>();
    m.scale_inv = j.at("scale_inv").get<float>();
    m.amax_history = h;
    m.history_filled = j.at("filled").get<int>();
    m.history_pos = j.at("pos").get<int>();
    m.jit_next = j.at("jit_next").get<bool>();
    m.counter = j.at("counter").get<int64_t>();
    m.zero_amax = j.at("zero_amax").get<int64_t>();
    m.nonfinite_amax = j.at("nonfinite_amax").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": bad scaling state: ", e.what());
  }
}

namespace {

// One stored state (master, m1 or m2) of parameter i as the writer on rank 0 reads it: its
// own, or (O3) a copy received from the owner, which sends in the same order
// (send_checkpoint_states).
struct State {
  const void* data;
  DType dtype;
  float scale_inv;
  std::vector<uint8_t> received;
};

DType state_dtype(const AdamW& opt, int which) {
  const StateFormats f = state_formats(opt.level());
  return which == 0 ? f.master : which == 1 ? f.m1 : f.m2;
}

const StoredTensor& stored(const AdamW::Param& p, int which) {
  return which == 0 ? p.master : which == 1 ? p.m1 : p.m2;
}

State fetch(const AdamW& opt, const std::vector<int>& owner, size_t i, int which) {
  const AdamW::Param& p = opt.params()[i];
  if (owner.empty() || owner[i] == dist::rank()) {
    const StoredTensor& st = stored(p, which);
    return {st.data.data(), st.data.dtype(), st.scale_inv, {}};
  }
  State s{nullptr, state_dtype(opt, which), 1.0f, {}};
  dist::recv_bytes(owner[i], &s.scale_inv, sizeof s.scale_inv);
  s.received.resize(p.numel * dtype_size(s.dtype));
  dist::recv_bytes(owner[i], s.received.data(), s.received.size());
  s.data = s.received.data();
  return s;
}

void send_state(const AdamW::Param& p, int which) {
  const StoredTensor& st = stored(p, which);
  dist::send_bytes(0, &st.scale_inv, sizeof st.scale_inv);
  dist::send_bytes(0, st.data.data(), st.data.bytes());
}

// model.safetensors in GptParams::save's layout (Hugging Face names, F32, wte without its
// padding rows), from the optimizer's masters, converted in chunks while writing.
void save_model_values(const std::string& path, const GptConfig& cfg, const AdamW& opt,
                       const std::vector<int>& owner) {
  const std::vector<ParamSpec> specs = param_layout(cfg);
  FP8LM_CHECK(specs.size() == opt.params().size(), "checkpoint: optimizer of ", opt.params().size(),
              " tensors for a model of ", specs.size());
  std::vector<SafetensorsSource> sources;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Shape shape = i == 0 ? Shape{cfg.vocab_size, cfg.n_embd} : specs[i].shape;
    sources.push_back({specs[i].name, DType::kF32, shape, [&, i, shape](const WriteFn& w) {
                         const State m = fetch(opt, owner, i, 0);
                         constexpr size_t kChunk = size_t{1} << 16;
                         std::vector<float> buf(kChunk);
                         const size_t n = static_cast<size_t>(shape.numel());
                         const size_t es = dtype_size(m.dtype);
                         const auto* src = static_cast<const uint8_t*>(m.data);
                         for (size_t i0 = 0; i0 < n; i0 += kChunk) {
                           const size_t k = std::min(kChunk, n - i0);
                           kernels::dequantize(buf.data(), src + i0 * es, m.dtype, k, m.scale_inv);
                           w(buf.data(), k * sizeof(float));
                         }
                       }});
  }
  write_safetensors_streamed(path, sources, {{"format", "pt"}, {"fp8lm.preset", cfg.preset}});
}

}  // namespace

void send_checkpoint_states(const AdamW& opt, const std::vector<int>& owner) {
  const int me = dist::rank();
  FP8LM_CHECK(me != 0 && owner.size() == opt.params().size(), "send_checkpoint_states");
  for (size_t i = 0; i < owner.size(); ++i)  // model.safetensors: masters
    if (owner[i] == me) send_state(opt.params()[i], 0);
  for (size_t i = 0; i < owner.size(); ++i)  // optimizer.safetensors: master, m1, m2
    if (owner[i] == me)
      for (int which = 0; which < 3; ++which) send_state(opt.params()[i], which);
}

std::string save_checkpoint(const std::string& out_dir, int64_t step, const GptConfig& cfg,
                            const AdamW& opt, const nlohmann::json& trainer,
                            const std::vector<int>& owner) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  fs::create_directories(root);
  const fs::path final_dir = root / ("step-" + std::to_string(step));
  const fs::path tmp =
      root / (".step-" + std::to_string(step) + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_model_values((tmp / "model.safetensors").string(), cfg, opt, owner);
  if (std::getenv("FP8LM_TEST_CRASH_IN_CHECKPOINT") != nullptr) std::abort();  // tests only

  // Optimizer states in their own dtypes; scalars NAME.{master,m1,m2}_scale_inv beside them
  // (each written right after its state, whose fetch supplies it).
  std::vector<SafetensorsSource> sources;
  std::vector<float> scales(opt.params().size() * 3, 1.0f);
  const char* what[] = {"master", "m1", "m2"};
  for (size_t i = 0; i < opt.params().size(); ++i) {
    const AdamW::Param& p = opt.params()[i];
    for (int which = 0; which < 3; ++which) {
      float* scale = &scales[i * 3 + static_cast<size_t>(which)];
      sources.push_back({p.name + "." + what[which], state_dtype(opt, which),
                         Shape{static_cast<int64_t>(p.numel)},
                         [&, i, which, scale](const WriteFn& w) {
                           const State st = fetch(opt, owner, i, which);
                           *scale = st.scale_inv;
                           w(st.data, p.numel * dtype_size(st.dtype));
                         }});
      sources.push_back({p.name + "." + what[which] + "_scale_inv", DType::kF32, Shape{},
                         [scale](const WriteFn& w) { w(scale, sizeof(float)); }});
    }
  }
  write_safetensors_streamed((tmp / "optimizer.safetensors").string(), sources,
                             {{"level", std::string(level_name(opt.level()))},
                              {"steps", std::to_string(opt.step_count())},
                              {"skipped", std::to_string(opt.skipped_steps())}});
  write_text_atomic((tmp / "trainer.json").string(), trainer.dump(2) + "\n");
  // Complete: move it into place (an older copy of the same step is replaced).
  if (fs::exists(final_dir)) fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  return final_dir.string();
}

std::string resolve_checkpoint(const std::string& path) {
  const fs::path p(path);
  if (fs::exists(p / "trainer.json")) return p.string();
  const fs::path root = p / "checkpoints";
  if (!fs::is_directory(root))
    fail(path, ": neither a checkpoint (no trainer.json) nor a run folder (no checkpoints/)");
  int64_t best = -1;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("step-") || !fs::exists(e.path() / "trainer.json")) continue;
    try {
      best = std::max<int64_t>(best, std::stoll(name.substr(5)));
    } catch (const std::exception&) {
    }
  }
  if (best < 0) fail(path, ": no complete checkpoint in ", root.string());
  return (root / ("step-" + std::to_string(best))).string();
}

GptConfig model_config_of(const nlohmann::json& t, const std::string& where) {
  try {
    const auto& m = t.at("model");
    GptConfig c;
    c.preset = m.at("preset").get<std::string>();
    c.n_layer = m.at("n_layer").get<int>();
    c.n_head = m.at("n_head").get<int>();
    c.n_embd = m.at("n_embd").get<int>();
    c.seq_len = m.at("seq_len").get<int>();
    c.vocab_size = m.at("vocab_size").get<int>();
    c.validate();
    return c;
  } catch (const nlohmann::json::exception& e) {
    fail(where, "/trainer.json: bad model section: ", e.what());
  }
}

nlohmann::json read_trainer_json(const std::string& dir) {
  const std::string path = dir + "/trainer.json";
  std::ifstream f(path);
  if (!f) fail(path, ": cannot open");
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
}

void load_optimizer(const std::string& dir, AdamW& opt) {
  const std::string path = dir + "/optimizer.safetensors";
  const SafetensorsFile f(path);
  const auto& meta = f.metadata();
  // Levels with the same state formats share checkpoints (O2 and O3: O3 is O2 sharded).
  PrecisionLevel saved = opt.level();
  try {
    saved = level_from_name(meta.at("level"));
  } catch (const std::exception&) {
    fail(path, ": optimizer level ", meta.contains("level") ? meta.at("level") : "(none)",
         ", the run uses ", level_name(opt.level()));
  }
  const StateFormats a = state_formats(saved), b = state_formats(opt.level());
  if (a.master != b.master || a.m1 != b.m1 || a.m2 != b.m2)
    fail(path, ": optimizer level ", level_name(saved), ", the run uses ", level_name(opt.level()),
         " (other state formats)");
  for (AdamW::Param& p : opt.params()) {
    if (!p.owned) continue;  // O3: another rank loads it
    const std::pair<const char*, StoredTensor*> states[] = {
        {"master", &p.master}, {"m1", &p.m1}, {"m2", &p.m2}};
    for (const auto& [what, st] : states) {
      const std::string name = p.name + "." + what;
      const SafetensorsEntry* e = f.find(name);
      const SafetensorsEntry* s = f.find(name + "_scale_inv");
      if (e == nullptr || s == nullptr) fail(path, ": missing ", name);
      if (e->view.dtype != st->data.dtype() || e->view.numel() != st->data.numel())
        fail(path, ": ", name, " is ", dtype_name(e->view.dtype), " ", e->view.shape.str(),
             ", the run needs ", dtype_name(st->data.dtype()), " [", st->data.numel(), "]");
      if (s->view.dtype != DType::kF32 || s->view.numel() != 1)
        fail(path, ": ", name, "_scale_inv must be an F32 scalar");
      std::memcpy(st->data.data(), e->view.data, e->view.bytes());
      std::memcpy(&st->scale_inv, s->view.data, sizeof(float));
    }
  }
  try {
    opt.restore_counters(std::stoll(meta.at("steps")), std::stoll(meta.at("skipped")));
  } catch (const std::exception&) {
    fail(path, ": bad or missing steps/skipped metadata");
  }
}

}  // namespace fp8lm
