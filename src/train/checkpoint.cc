#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/check.h"
#include "core/file.h"
#include "distributed/fp8_reduce.h"
#include "distributed/world.h"
#include "kernels/cast.h"
#include "model/gpt.h"
#include "tensor/safetensors.h"
#include "train/gpt_state.h"

namespace fp8lm {
namespace fs = std::filesystem;

namespace {

using nlohmann::json;

// Strict readers of untrusted JSON: the type must be the one written (nlohmann would
// convert 1.5 to 1, or a huge double to an int with undefined behaviour) and the value
// in range. `where` names the file and the path to the object.
const json& member(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object()) fail(where, ": expected an object");
  const auto it = obj.find(key);
  if (it == obj.end()) fail(where, ".", key, ": missing");
  return *it;
}

int64_t int_member(const json& obj, const char* key, int64_t lo, int64_t hi,
                   const std::string& where) {
  const json& v = member(obj, key, where);
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX))
      fail(where, ".", key, " = ", u, ": must be in [", lo, ", ", hi, "]");
    x = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    fail(where, ".", key, ": expected an integer, got ", v.dump());
  }
  if (x < lo || x > hi) fail(where, ".", key, " = ", x, ": must be in [", lo, ", ", hi, "]");
  return x;
}

float float_member(const json& obj, const char* key, const std::string& where) {
  const json& v = member(obj, key, where);
  if (!v.is_number()) fail(where, ".", key, ": expected a number, got ", v.dump());
  const double d = v.get<double>();
  const float f = static_cast<float>(d);
  if (!std::isfinite(d) || !std::isfinite(f)) fail(where, ".", key, " = ", d, ": not a finite float");
  return f;
}

bool bool_member(const json& obj, const char* key, const std::string& where) {
  const json& v = member(obj, key, where);
  if (!v.is_boolean()) fail(where, ".", key, ": expected true or false, got ", v.dump());
  return v.get<bool>();
}

std::string string_member(const json& obj, const char* key, const std::string& where) {
  const json& v = member(obj, key, where);
  if (!v.is_string()) fail(where, ".", key, ": expected a string, got ", v.dump());
  return v.get<std::string>();
}

// A non-negative decimal count in the file's metadata.
int64_t counter_metadata(const SafetensorsFile& f, const std::string& key) {
  const auto it = f.metadata().find(key);
  const std::string v = it == f.metadata().end() ? "" : it->second;
  if (v.empty() || v.size() > 12 || v.find_first_not_of("0123456789") != std::string::npos)
    fail(f.path(), ": metadata ", key, " = '", v, "': expected a count");
  return std::stoll(v);
}

// True when a stored second moment has a negative value (its sign bit set and not zero).
bool any_negative(const ConstTensorView& v) {
  const size_t n = static_cast<size_t>(v.numel()), es = dtype_size(v.dtype);
  const auto* p = static_cast<const uint8_t*>(v.data);
  for (size_t i = 0; i < n; ++i) {
    uint64_t bits = 0;
    std::memcpy(&bits, p + i * es, es);
    const uint64_t sign = uint64_t{1} << (8 * es - 1);
    if ((bits & sign) != 0 && (bits & (sign - 1)) != 0) return true;
  }
  return false;
}

// A scale as compute_scale makes them: a normal float in [2^-126, 2^126].
bool valid_scale(float s) { return s >= std::ldexp(1.0f, -126) && s <= std::ldexp(1.0f, 126); }

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
  const int64_t window = m.recipe.window;
  const json& h = member(j, "history", where);
  if (!h.is_array() || h.size() != static_cast<size_t>(window))
    fail(where, ".history: expected ", window, " amax values (the run's amax_window), got ",
         h.is_array() ? std::to_string(h.size()) + " values" : h.dump());
  std::vector<float> history(h.size());
  for (size_t i = 0; i < h.size(); ++i) {
    if (!h[i].is_number()) fail(where, ".history[", i, "]: expected a number, got ", h[i].dump());
    const double d = h[i].get<double>();
    history[i] = static_cast<float>(d);
    if (!(d >= 0) || !std::isfinite(history[i]))
      fail(where, ".history[", i, "] = ", d, ": an amax must be finite and >= 0");
  }
  ScalingMeta r = m;
  r.scale = float_member(j, "scale", where);
  r.scale_inv = float_member(j, "scale_inv", where);
  if (!valid_scale(r.scale) || r.scale_inv != 1.0f / r.scale)
    fail(where, ": scale ", r.scale, " and scale_inv ", r.scale_inv,
         " are not a pair of reciprocal scales in [2^-126, 2^126]");
  r.amax_history = std::move(history);
  r.history_filled = static_cast<int>(int_member(j, "filled", 0, window, where));
  r.history_pos = static_cast<int>(int_member(j, "pos", 0, window - 1, where));
  r.jit_next = bool_member(j, "jit_next", where);
  r.counter = int_member(j, "counter", 0, INT64_MAX / 2, where);
  r.zero_amax = int_member(j, "zero_amax", 0, r.counter, where);
  r.nonfinite_amax = int_member(j, "nonfinite_amax", 0, r.counter, where);
  // Finite amaxes (counter - nonfinite) fill the ring in order: its fill and position are
  // functions of that count, and slots never written are zero.
  const int64_t finite = r.counter - r.nonfinite_amax;
  if (r.zero_amax > finite)
    fail(where, ": zero_amax ", r.zero_amax, " exceeds the finite amaxes recorded (", finite, ")");
  if (r.history_filled != std::min(finite, window) || r.history_pos != finite % window)
    fail(where, ": filled ", r.history_filled, " and pos ", r.history_pos, " do not follow from ",
         finite, " recorded amaxes in a window of ", window);
  for (int64_t i = r.history_filled; i < window; ++i)
    if (r.amax_history[static_cast<size_t>(i)] != 0.0f)
      fail(where, ".history[", i, "]: set although only ", r.history_filled, " were recorded");
  m = std::move(r);
}

void check_state_values(const std::string& path, const std::string& name, const void* data,
                        DType dtype, size_t numel, float scale_inv) {
  if (!(scale_inv > 0) || !std::isfinite(scale_inv))
    fail(path, ": ", name, "_scale_inv = ", scale_inv, ": must be finite and > 0");
  constexpr size_t kChunk = size_t{1} << 14;
  std::vector<float> buf(std::min(kChunk, numel));
  const size_t es = dtype_size(dtype);
  const auto* src = static_cast<const uint8_t*>(data);
  for (size_t i0 = 0; i0 < numel; i0 += kChunk) {
    const size_t k = std::min(kChunk, numel - i0);
    kernels::dequantize(buf.data(), src + i0 * es, dtype, k, scale_inv);
    for (size_t i = 0; i < k; ++i)
      if (!std::isfinite(buf[i]))
        fail(path, ": ", name, "[", i0 + i, "] is not finite (", buf[i], ")");
  }
}

namespace {

// One stored state (master, m1 or m2) of parameter i as the writer on rank 0 reads it: a
// view of its own, or (O3) of a copy received from the owner, which sends in the same order
// (send_checkpoint_states).
struct State {
  ScaledView view;
  std::vector<uint8_t> received;
  float received_scale = 1.0f;
};

DType state_dtype(const AdamW& opt, int which) {
  const StateFormats& f = opt.states();
  return which == 0 ? f.master : which == 1 ? f.m1 : f.m2;
}

const ScaledTensor& stored(const AdamW::Param& p, int which) {
  return which == 0 ? p.master : which == 1 ? p.m1 : p.m2;
}

// Where tensor `name` (of the whole model) lives: its pipeline stage, its index there, whether
// it is split over the tensor-parallel ranks, and the data-parallel rank keeping it.
struct Place {
  int stage;
  size_t index;
  bool split;
  int dp;
};

Place place_of(const StateLayout& l, const std::string& name) {
  const int stages = static_cast<int>(l.stage_specs.size());
  for (int st = 0; st < stages; ++st) {  // the first holder (stage 0 for the tied wte)
    const std::vector<ParamSpec>& specs = l.stage_specs[static_cast<size_t>(st)];
    for (size_t j = 0; j < specs.size(); ++j) {
      if (specs[j].name != name) continue;
      const std::vector<int>& owner = l.stage_owner[static_cast<size_t>(st)];
      return {st, j, l.tp.size > 1 && specs[j].split != Split::kNone,
              owner.empty() ? 0 : owner[j]};
    }
  }
  fail("checkpoint: no stage holds ", name);
}

int global_rank(const StateLayout& l, const Place& p, int q) {
  return (p.dp * l.pp.size + p.stage) * l.tp.size + q;
}

// Receives one state (scale, then payload) from `src` into `bytes`.
float receive_state(int src, void* data, size_t bytes) {
  float scale = 0.0f;
  dist::recv_bytes(src, &scale, sizeof scale);
  dist::recv_bytes(src, data, bytes);
  return scale;
}

// State `which` of the whole tensor `full` (rank 0). By pointer: the view may point into the
// State itself.
std::unique_ptr<State> fetch(const AdamW& opt, const StateLayout& l, const ParamSpec& full,
                             int which) {
  auto s = std::make_unique<State>();
  const DType t = state_dtype(opt, which);
  const size_t es = dtype_size(t);
  const int me = dist::rank();
  const Place at = place_of(l, full.name);
  const ParamSpec& spec = l.stage_specs[static_cast<size_t>(at.stage)][at.index];
  if (at.split) {  // the whole tensor: every shard in its place, one scale
    s->received.resize(static_cast<size_t>(spec.full_shape.numel()) * es);
    std::vector<uint8_t> shard(spec.numel() * es);
    for (int q = 0; q < l.tp.size; ++q) {
      const int src = global_rank(l, at, q);
      float scale;
      const void* data = shard.data();
      if (src == me) {
        const ScaledTensor& st = stored(opt.params()[at.index], which);
        scale = st.view().tensor_scale();
        data = st.data.data();
      } else {
        scale = receive_state(src, shard.data(), shard.size());
      }
      if (q == 0) s->received_scale = scale;
      FP8LM_CHECK(scale == s->received_scale, full.name, ": tensor-parallel shards with scales ",
                  s->received_scale, " and ", scale, " (they must share one)");
      place_shard(spec, TpShard{q, l.tp.size}, data, s->received.data(), es);
    }
    s->view = tensor_view(static_cast<const void*>(s->received.data()), t, spec.full_shape,
                          &s->received_scale);
    return s;
  }
  const int src = global_rank(l, at, 0);
  if (src == me) {
    s->view = stored(opt.params()[at.index], which).view();
    return s;
  }
  s->received.resize(spec.numel() * es);
  s->received_scale = receive_state(src, s->received.data(), s->received.size());
  s->view = tensor_view(static_cast<const void*>(s->received.data()), t,
                        Shape{static_cast<int64_t>(spec.numel())}, &s->received_scale);
  return s;
}

void send_state(const AdamW::Param& p, int which) {
  const ScaledTensor& st = stored(p, which);
  const float scale = st.view().tensor_scale();
  dist::send_bytes(0, &scale, sizeof scale);
  dist::send_bytes(0, st.data.data(), st.data.bytes());
}

// The whole tensors the optimizer trains, in file order.
std::vector<ParamSpec> whole_tensors(const GptConfig& cfg, const StateLayout& l) {
  return l.adapters.empty() ? param_layout(cfg) : l.adapters;
}

// The layout of a one-process optimizer (rank 0 holds every tensor).
StateLayout whole(const AdamW& opt, const GptConfig& cfg, const StateLayout& l) {
  if (!l.stage_specs.empty()) return l;
  StateLayout w;
  w.adapters = l.adapters;
  w.stage_specs = {whole_tensors(cfg, l)};
  w.stage_owner = {{}};
  FP8LM_CHECK(w.stage_specs[0].size() == opt.params().size(), "checkpoint: optimizer of ",
              opt.params().size(), " tensors for a model of ", w.stage_specs[0].size());
  return w;
}

// model.safetensors in GptParams::save's layout (Hugging Face names, F32, wte without its
// padding rows), from the optimizer's masters, converted in chunks while writing.
void save_model_values(const std::string& path, const GptConfig& cfg, const AdamW& opt,
                       const StateLayout& layout) {
  const std::vector<ParamSpec> specs = whole_tensors(cfg, layout);
  std::vector<SafetensorsSource> sources;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Shape shape =
        specs[i].name == "wte.weight" ? Shape{cfg.vocab_size, cfg.n_embd} : specs[i].shape;
    sources.push_back({specs[i].name, DType::kF32, shape, [&, i, shape](const WriteFn& w) {
                         const auto m = fetch(opt, layout, specs[i], 0);
                         constexpr size_t kChunk = size_t{1} << 16;
                         std::vector<float> buf(kChunk);
                         const size_t n = static_cast<size_t>(shape.numel());
                         const DType t = m->view.data.dtype;
                         const size_t es = dtype_size(t);
                         const float scale = m->view.tensor_scale();
                         const auto* src = static_cast<const uint8_t*>(m->view.data.data);
                         for (size_t i0 = 0; i0 < n; i0 += kChunk) {
                           const size_t k = std::min(kChunk, n - i0);
                           kernels::dequantize(buf.data(), src + i0 * es, t, k, scale);
                           w(buf.data(), k * sizeof(float));
                         }
                       }});
  }
  write_safetensors_streamed(path, sources, {{"format", "pt"}, {"fp8lm.preset", cfg.preset}});
}

}  // namespace

void send_checkpoint_states(const GptConfig& cfg, const AdamW& opt, const StateLayout& l) {
  const int me = dist::rank();
  FP8LM_CHECK(me != 0, "send_checkpoint_states: rank 0 writes the checkpoint");
  const int my_tp = me % l.tp.size, my_dp = me / (l.tp.size * l.pp.size);
  // Each whole tensor from this rank: its shard if split, the whole from tp rank 0 — when
  // this rank's stage (the first holding it) and data-parallel rank keep it. In the order
  // fetch() receives them.
  std::vector<size_t> mine;
  for (const ParamSpec& full : whole_tensors(cfg, l)) {
    const Place at = place_of(l, full.name);
    if (at.stage == l.pp.rank && at.dp == my_dp && (at.split || my_tp == 0))
      mine.push_back(at.index);
  }
  for (size_t j : mine) send_state(opt.params().at(j), 0);  // model.safetensors: masters
  for (size_t j : mine)  // optimizer.safetensors: master, m1, m2
    for (int which = 0; which < 3; ++which) send_state(opt.params().at(j), which);
}

namespace {

void write_checkpoint_files(const fs::path& tmp, const GptConfig& cfg, const AdamW& opt,
                            const nlohmann::json& trainer, const StateLayout& layout) {
  const char* values = layout.adapters.empty() ? "model.safetensors" : "adapters.safetensors";
  save_model_values((tmp / values).string(), cfg, opt, layout);
  if (std::getenv("FP8LM_TEST_CRASH_IN_CHECKPOINT") != nullptr) std::abort();  // tests only

  // Optimizer states in their own dtypes; scalars NAME.{master,m1,m2}_scale_inv beside them
  // (each written right after its state, whose fetch supplies it).
  const std::vector<ParamSpec> specs = whole_tensors(cfg, layout);
  std::vector<SafetensorsSource> sources;
  std::vector<float> scales(specs.size() * 3, 1.0f);
  const char* what[] = {"master", "m1", "m2"};
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& p = specs[i];
    for (int which = 0; which < 3; ++which) {
      float* scale = &scales[i * 3 + static_cast<size_t>(which)];
      sources.push_back({p.name + "." + what[which], state_dtype(opt, which),
                         Shape{static_cast<int64_t>(p.numel())},
                         [&, which, scale](const WriteFn& w) {
                           const auto st = fetch(opt, layout, p, which);
                           *scale = st->view.tensor_scale();
                           w(st->view.data.data, st->view.data.bytes());
                         }});
      sources.push_back({p.name + "." + what[which] + "_scale_inv", DType::kF32, Shape{},
                         [scale](const WriteFn& w) { w(scale, sizeof(float)); }});
    }
  }
  write_safetensors_streamed((tmp / "optimizer.safetensors").string(), sources,
                             {{"level", std::string(level_name(opt.level()))},
                              {"master", std::string(dtype_name(opt.states().master))},
                              {"m1", std::string(dtype_name(opt.states().m1))},
                              {"m2", std::string(dtype_name(opt.states().m2))},
                              {"steps", std::to_string(opt.step_count())},
                              {"skipped", std::to_string(opt.skipped_steps())}});
  write_text_atomic((tmp / "trainer.json").string(), trainer.dump(2) + "\n");
  fsync_dir(tmp.string());
}

}  // namespace

void remove_stale_checkpoint_temps(const std::string& out_dir) {
  // Garbage of interrupted writes: the run folder is locked, so no other writer uses one.
  const fs::path root = fs::path(out_dir) / "checkpoints";
  if (!fs::is_directory(root)) return;
  for (const auto& e : fs::directory_iterator(root))
    if (e.path().filename().string().starts_with(".step-")) fs::remove_all(e.path());
}

std::string save_checkpoint(const std::string& out_dir, int64_t step, const GptConfig& cfg,
                            const AdamW& opt, const nlohmann::json& trainer,
                            const StateLayout& layout) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  fs::create_directories(root);
  const std::string name = "step-" + std::to_string(step);
  const fs::path final_dir = root / name;
  remove_stale_checkpoint_temps(out_dir);
  const fs::path tmp = root / ("." + name + ".tmp-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  try {
    write_checkpoint_files(tmp, cfg, opt, trainer, whole(opt, cfg, layout));
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  // Complete: move it into place. An older copy of the same step (a resumed run saving it
  // again) is moved aside first and removed only after the new one is in place.
  const fs::path old = root / ("." + name + ".old-" + std::to_string(::getpid()));
  const bool replace = fs::exists(final_dir);
  if (replace) fs::rename(final_dir, old);
  fs::rename(tmp, final_dir);
  fsync_dir(root.string());
  if (replace) fs::remove_all(old);
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
  const std::string w = where + "/trainer.json: model";
  const json& m = member(t, "model", where + "/trainer.json");
  GptConfig c;
  c.preset = string_member(m, "preset", w);
  c.n_layer = static_cast<int>(int_member(m, "n_layer", 1, 1000, w));
  c.n_head = static_cast<int>(int_member(m, "n_head", 1, 1 << 16, w));
  c.n_embd = static_cast<int>(int_member(m, "n_embd", 1, 1 << 16, w));
  c.seq_len = static_cast<int>(int_member(m, "seq_len", 1, 1 << 16, w));
  c.vocab_size = static_cast<int>(int_member(m, "vocab_size", 1, 1 << 24, w));
  try {
    c.validate();
  } catch (const Error& e) {
    fail(w, ": ", e.what());
  }
  return c;
}

nlohmann::json trainer_json(const TrainerState& s) {
  return {{"step", s.step},
          {"seed", s.seed},
          {"level", s.level},
          {"batch_size", s.batch_size},
          {"grad_accum", s.grad_accum},
          {"data", {{"train", s.train_path}, {"next_step", s.step}}},
          {"model",
           {{"preset", s.model.preset},
            {"n_layer", s.model.n_layer},
            {"n_head", s.model.n_head},
            {"n_embd", s.model.n_embd},
            {"seq_len", s.model.seq_len},
            {"vocab_size", s.model.vocab_size}}},
          {"fp8",
           {{"recipe", s.recipe},
            {"amax_window", s.amax_window},
            {"margin", s.margin},
            {"mx_grad_format", s.mx_grad_format}}},
          {"lm_head", s.lm_head},
          {"tokenizer", s.tokenizer},
          {"tokenizer_dir", s.tokenizer_dir},
          {"world_size", s.world_size},
          {"grad_scaling_mu", s.grad_scaling_mu},
          {"scaling", s.scaling},
          {"lora",
           s.lora.on() ? json{{"rank", s.lora.rank},
                              {"alpha", s.lora.alpha},
                              {"targets", lora_targets_text(s.lora.targets)},
                              {"base", s.base},
                              {"base_fingerprint", s.base_fingerprint}}
                       : json(nullptr)}};
}

TrainerState read_trainer_state(const std::string& dir) {
  const json t = read_trainer_json(dir);
  const std::string w = dir + "/trainer.json";
  if (!t.is_object()) fail(w, ": expected a JSON object");
  TrainerState s;
  s.step = int_member(t, "step", 0, INT32_MAX, w);
  const std::string folder = fs::path(dir).lexically_normal().filename().string();
  if (folder.starts_with("step-") && folder != "step-" + std::to_string(s.step))
    fail(w, ".step = ", s.step, ": the checkpoint folder is ", folder);
  s.seed = int_member(t, "seed", INT64_MIN, INT64_MAX, w);
  s.level = string_member(t, "level", w);
  try {
    level_from_name(s.level);
  } catch (const Error& e) {
    fail(w, ".level: ", e.what());
  }
  s.batch_size = static_cast<int>(int_member(t, "batch_size", 1, 1 << 20, w));
  s.grad_accum = static_cast<int>(int_member(t, "grad_accum", 1, 1 << 20, w));
  const json& data = member(t, "data", w);
  s.train_path = string_member(data, "train", w + ": data");
  if (int_member(data, "next_step", 0, INT32_MAX, w + ": data") != s.step)
    fail(w, ": data.next_step differs from step ", s.step);
  s.model = model_config_of(t, dir);
  const json& fp8 = member(t, "fp8", w);
  s.recipe = string_member(fp8, "recipe", w + ": fp8");
  try {
    recipe_plan(s.recipe);
  } catch (const Error& e) {
    fail(w, ": fp8.recipe: ", e.what());
  }
  s.mx_grad_format = string_member(fp8, "mx_grad_format", w + ": fp8");
  if (s.mx_grad_format != "e4m3" && s.mx_grad_format != "e5m2")
    fail(w, ": fp8.mx_grad_format = '", s.mx_grad_format, "': must be e4m3 or e5m2");
  s.amax_window = static_cast<int>(int_member(fp8, "amax_window", 1, 1024, w + ": fp8"));
  s.margin = static_cast<int>(int_member(fp8, "margin", 0, 8, w + ": fp8"));
  if (t.contains("lm_head")) {
    s.lm_head = string_member(t, "lm_head", w);
    if (s.lm_head != "f32" && s.lm_head != "bf16")
      fail(w, ".lm_head = '", s.lm_head, "': must be f32 or bf16");
  }
  s.tokenizer = string_member(t, "tokenizer", w);
  if (s.tokenizer != "gpt2" && s.tokenizer != "byte")
    fail(w, ".tokenizer = '", s.tokenizer, "': must be gpt2 or byte");
  s.tokenizer_dir = string_member(t, "tokenizer_dir", w);
  s.world_size = static_cast<int>(int_member(t, "world_size", 1, 1 << 20, w));
  s.grad_scaling_mu = float_member(t, "grad_scaling_mu", w);
  if (!(s.grad_scaling_mu > 0 && s.grad_scaling_mu <= dist::Fp8GradReducer::kMaxMu))
    fail(w, ".grad_scaling_mu = ", s.grad_scaling_mu, ": must be in (0, 2^32]");
  // Every scaling state is checked here, whoever reads the file (eval, sample, resume).
  s.scaling = member(t, "scaling", w);
  const size_t metas = Gpt::scaling_meta_count(s.model, level_plan(level_from_name(s.level)).compute);
  if (!s.scaling.is_array() || s.scaling.size() != metas)
    fail(w, ".scaling: expected ", metas, " scaling states for a ", s.model.n_layer,
         "-layer model at level ", s.level);
  ScalingRecipe recipe;
  recipe.window = s.amax_window;
  for (size_t i = 0; i < metas; ++i) {
    ScalingMeta m(recipe);
    scaling_from_json(s.scaling[i], m, w + ": scaling[" + std::to_string(i) + "]");
  }
  // LoRA (absent in checkpoints of earlier versions: full training).
  if (t.contains("lora") && !t["lora"].is_null()) {
    const json& l = member(t, "lora", w);
    const std::string wl = w + ": lora";
    s.lora.rank = static_cast<int>(int_member(l, "rank", 1, 1 << 16, wl));
    const json& alpha = member(l, "alpha", wl);
    if (!alpha.is_number() || !(alpha.get<double>() > 0 && alpha.get<double>() <= 1e6))
      fail(wl, ".alpha = ", alpha.dump(), ": must be a number in (0, 1e6]");
    s.lora.alpha = alpha.get<double>();
    try {
      s.lora.targets = parse_lora_targets(string_member(l, "targets", wl));
      lora_layout(s.model, s.lora);
    } catch (const Error& e) {
      fail(wl, ": ", e.what());
    }
    s.base = string_member(l, "base", wl);
    s.base_fingerprint = string_member(l, "base_fingerprint", wl);
  }
  // The optimizer file must be of the same level and step.
  const SafetensorsFile opt(dir + "/optimizer.safetensors");
  const auto level = opt.metadata().find("level");
  if (level == opt.metadata().end() || level->second != s.level)
    fail(w, ".level = ", s.level, ", but ", opt.path(), " is of level ",
         level == opt.metadata().end() ? "(none)" : level->second);
  if (counter_metadata(opt, "steps") + counter_metadata(opt, "skipped") != s.step)
    fail(w, ".step = ", s.step, ", but ", opt.path(), " has ", counter_metadata(opt, "steps"),
         " steps + ", counter_metadata(opt, "skipped"), " skipped");
  return s;
}

void restore_scaling(const TrainerState& s, const std::vector<ScalingMeta*>& metas,
                     const std::string& dir) {
  const std::string w = dir + "/trainer.json";
  if (s.scaling.size() != metas.size())
    fail(w, ": ", s.scaling.size(), " scaling states, the model has ", metas.size(),
         " (another precision level?)");
  for (size_t i = 0; i < metas.size(); ++i)
    scaling_from_json(s.scaling[i], *metas[i], w + ": scaling[" + std::to_string(i) + "]");
}

nlohmann::json read_trainer_json(const std::string& dir) {
  const std::string path = dir + "/trainer.json";
  const std::string text = read_text_file(path, 64 << 20);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
}



void load_optimizer(const std::string& dir, AdamW& opt, const std::vector<ParamSpec>& shards,
                    TpShard tp) {
  FP8LM_CHECK(tp.size == 1 || shards.size() == opt.params().size(),
              "load_optimizer: one shard spec per parameter");
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
  // The saved state formats (files before precision.master/m1/m2 name only the level).
  StateFormats a = level_plan(saved).states;
  const std::pair<const char*, DType*> formats[] = {{"master", &a.master}, {"m1", &a.m1}, {"m2", &a.m2}};
  for (const auto& [key, dt] : formats) {
    if (!meta.contains(key)) continue;
    const std::optional<DType> t = dtype_from_name(meta.at(key));
    if (!t) fail(path, ": metadata ", key, " = '", meta.at(key), "' is not a dtype");
    *dt = *t;
  }
  const StateFormats& b = opt.states();
  if (a.master != b.master || a.m1 != b.m1 || a.m2 != b.m2)
    fail(path, ": optimizer states master/m1/m2 ", dtype_name(a.master), "/", dtype_name(a.m1),
         "/", dtype_name(a.m2), " (level ", level_name(saved), "), the run uses ",
         dtype_name(b.master), "/", dtype_name(b.m1), "/", dtype_name(b.m2), " (level ",
         level_name(opt.level()), ")");
  for (size_t i = 0; i < opt.params().size(); ++i) {
    AdamW::Param& p = opt.params()[i];
    if (!p.owned) continue;  // O3: another rank loads it
    const bool split = tp.size > 1 && shards[i].split != Split::kNone;
    const size_t numel = split ? static_cast<size_t>(shards[i].full_shape.numel()) : p.numel;
    const std::pair<const char*, ScaledTensor*> states[] = {
        {"master", &p.master}, {"m1", &p.m1}, {"m2", &p.m2}};
    for (const auto& [what, st] : states) {
      const std::string name = p.name + "." + what;
      const SafetensorsEntry* e = f.find(name);
      const SafetensorsEntry* s = f.find(name + "_scale_inv");
      if (e == nullptr || s == nullptr) fail(path, ": missing ", name);
      if (e->view.dtype != st->data.dtype() || static_cast<size_t>(e->view.numel()) != numel)
        fail(path, ": ", name, " is ", dtype_name(e->view.dtype), " ", e->view.shape.str(),
             ", the run needs ", dtype_name(st->data.dtype()), " [", numel, "]");
      if (s->view.dtype != DType::kF32 || s->view.numel() != 1)
        fail(path, ": ", name, "_scale_inv must be an F32 scalar");
      float scale_inv;
      std::memcpy(&scale_inv, s->view.data, sizeof(float));
      check_state_values(path, name, e->view.data, e->view.dtype, e->view.numel(), scale_inv);
      if (std::strcmp(what, "m2") == 0 && any_negative(e->view))
        fail(path, ": ", name, " has negative values (a second moment is >= 0)");
      if (split)  // this rank's shard of the whole tensor (shards share its scale)
        extract_shard(shards[i], tp, e->view.data, st->data.data(), dtype_size(e->view.dtype));
      else
        std::memcpy(st->data.data(), e->view.data, e->view.bytes());
      st->meta.scale_inv = scale_inv;  // in place: views of the state stay valid
      st->meta.scale = 1.0f / scale_inv;
    }
  }
  opt.restore_counters(counter_metadata(f, "steps"), counter_metadata(f, "skipped"));
}

}  // namespace fp8lm
