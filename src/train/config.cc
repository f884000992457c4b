#include "train/config.h"

#include <toml++/toml.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/check.h"
#include "core/parallel.h"
#include "data/unicode.h"
#include "kernels/adamw.h"
#include "tensor/quant_stats.h"
#include "train/init_from.h"

namespace fp8lm {
namespace {

// One configuration key: its section.name, and how to read and print it.
struct Key {
  std::string name;
  std::function<void(TrainConfig&, const toml::node&, const std::string& where)> set;
  std::function<std::string(const TrainConfig&)> get;
};

template <typename T>
Key key(std::string name, T TrainConfig::*field) {
  Key k;
  k.name = name;
  k.set = [field, name](TrainConfig& c, const toml::node& n, const std::string& where) {
    if constexpr (std::is_same_v<T, std::string>) {
      if (!n.is_string()) fail(where, name, ": expected a string");
      c.*field = *n.value<std::string>();
    } else if constexpr (std::is_same_v<T, bool>) {
      if (!n.is_boolean()) fail(where, name, ": expected true or false");
      c.*field = *n.value<bool>();
    } else if constexpr (std::is_same_v<T, double>) {
      if (!n.is_number()) fail(where, name, ": expected a number");
      // An integer beyond 2^53 has no exact double: toml++ gives none, we round it.
      c.*field = n.is_integer() ? static_cast<double>(n.as_integer()->get()) : *n.value<double>();
    } else {
      if (!n.is_integer()) fail(where, name, ": expected an integer");
      const int64_t v = *n.value<int64_t>();
      if constexpr (std::is_same_v<T, int>) {
        if (v < INT32_MIN || v > INT32_MAX) fail(where, name, ": ", v, " is out of range");
      }
      c.*field = static_cast<T>(v);
    }
  };
  k.get = [field](const TrainConfig& c) {
    if constexpr (std::is_same_v<T, bool>) {
      return std::string(c.*field ? "true" : "false");
    } else if constexpr (std::is_same_v<T, std::string>) {
      std::ostringstream os;
      os << toml::value<std::string>(c.*field);
      return os.str();
    } else {
      std::ostringstream os;
      os.precision(17);
      os << c.*field;
      return os.str();
    }
  };
  return k;
}

const std::vector<Key>& keys() {
  static const std::vector<Key> k = {
      key("model.preset", &TrainConfig::preset),
      key("model.n_layer", &TrainConfig::n_layer),
      key("model.n_head", &TrainConfig::n_head),
      key("model.n_embd", &TrainConfig::n_embd),
      key("model.seq_len", &TrainConfig::seq_len),
      key("data.train", &TrainConfig::train_path),
      key("data.val", &TrainConfig::val_path),
      key("data.tokenizer", &TrainConfig::tokenizer),
      key("data.tokenizer_dir", &TrainConfig::tokenizer_dir),
      key("train.batch_size", &TrainConfig::batch_size),
      key("train.grad_accum", &TrainConfig::grad_accum),
      key("train.steps", &TrainConfig::steps),
      key("train.lr", &TrainConfig::lr),
      key("train.min_lr", &TrainConfig::min_lr),
      key("train.warmup_steps", &TrainConfig::warmup_steps),
      key("train.weight_decay", &TrainConfig::weight_decay),
      key("train.beta1", &TrainConfig::beta1),
      key("train.beta2", &TrainConfig::beta2),
      key("train.grad_clip", &TrainConfig::grad_clip),
      key("train.eval_every", &TrainConfig::eval_every),
      key("train.eval_batches", &TrainConfig::eval_batches),
      key("train.checkpoint_every", &TrainConfig::checkpoint_every),
      key("train.seed", &TrainConfig::seed),
      key("train.init_from", &TrainConfig::init_from),
      key("train.out_dir", &TrainConfig::out_dir),
      key("train.threads", &TrainConfig::threads),
      key("train.comm_timeout", &TrainConfig::comm_timeout),
      key("parallel.tp", &TrainConfig::tp),
      key("parallel.pp", &TrainConfig::pp),
      key("parallel.pp_wire", &TrainConfig::pp_wire),
      key("parallel.sequence", &TrainConfig::sequence),
      key("parallel.gather", &TrainConfig::gather),
      key("parallel.wire", &TrainConfig::wire),
      key("precision.level", &TrainConfig::level),
      key("precision.recipe", &TrainConfig::recipe),
      key("precision.mx_grad_format", &TrainConfig::mx_grad_format),
      key("precision.amax_window", &TrainConfig::amax_window),
      key("precision.margin", &TrainConfig::margin),
      key("precision.grad_scaling", &TrainConfig::grad_scaling),
      key("precision.master", &TrainConfig::master_format),
      key("precision.m1", &TrainConfig::m1_format),
      key("precision.m2", &TrainConfig::m2_format),
      key("precision.lm_head", &TrainConfig::lm_head),
      key("telemetry.every", &TrainConfig::telemetry_every),
      key("telemetry.what_if", &TrainConfig::what_if),
      key("telemetry.underflow_alarm", &TrainConfig::underflow_alarm),
      key("telemetry.saturation_alarm", &TrainConfig::saturation_alarm),
      key("telemetry.kurtosis_alarm", &TrainConfig::kurtosis_alarm),
      key("telemetry.loss_spike_alarm", &TrainConfig::loss_spike_alarm),
      key("telemetry.stop_on_alarm", &TrainConfig::stop_on_alarm),
      key("finetune.objective", &TrainConfig::objective),
      key("finetune.beta", &TrainConfig::beta),
      key("finetune.samples", &TrainConfig::samples),
      key("finetune.clip", &TrainConfig::clip),
      key("finetune.kl", &TrainConfig::kl),
      key("finetune.temperature", &TrainConfig::temperature),
      key("finetune.max_new_tokens", &TrainConfig::max_new_tokens),
      key("finetune.reward_command", &TrainConfig::reward_command),
      key("finetune.lora_rank", &TrainConfig::lora_rank),
      key("finetune.lora_alpha", &TrainConfig::lora_alpha),
      key("finetune.lora_targets", &TrainConfig::lora_targets),
  };
  return k;
}

bool valid_utf8(std::string_view s) {
  // Every code point a Unicode scalar value (no surrogates, none past U+10FFFF: a 0xF5 lead
  // byte decodes and re-encodes to itself, yet no TOML writer can keep it), and the bytes
  // exactly their shortest encoding.
  std::string round_trip;
  for (size_t i = 0; i < s.size();) {
    const char32_t cp = unicode::next_code_point(s, i);
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    unicode::append_utf8(round_trip, cp);
  }
  return round_trip == s;
}

const Key* find_key(const std::string& name) {
  for (const Key& k : keys())
    if (k.name == name) return &k;
  return nullptr;
}

}  // namespace

TpOptions TrainConfig::tp_options() const {
  TpOptions o;
  o.sequence = sequence;
  o.gather_bf16 = gather == "bf16";
  o.wire = wire == "f32" ? DType::kF32 : DType::kBF16;
  return o;
}

DType TrainConfig::pp_wire_dtype() const {
  if (level_plan(precision_level()).compute == ComputeMode::kF32 || pp_wire == "f32")
    return DType::kF32;
  return pp_wire == "e4m3" ? DType::kE4M3 : DType::kBF16;
}

GptConfig TrainConfig::model() const {
  if (!init_from.empty()) {
    for (const auto& [k, v] : {std::pair{"model.n_layer", n_layer}, std::pair{"model.n_head", n_head},
                               std::pair{"model.n_embd", n_embd}})
      if (v != 0) fail(k, " = ", v, ": the model's shape comes from train.init_from");
    return pretrained_config(init_from, seq_len);
  }
  GptConfig c = gpt_preset(preset);
  if (n_layer) c.n_layer = n_layer;
  if (n_head) c.n_head = n_head;
  if (n_embd) c.n_embd = n_embd;
  if (seq_len) c.seq_len = seq_len;
  c.validate();
  return c;
}

void TrainConfig::validate() const {
  model();
  // Bounds keep every product the trainer forms finite (lr · weight_decay, B · T · accum):
  // an infinite or absurd value would only reach the weights as NaN.
  auto in_range = [](const char* k, double v, double lo, double hi, const char* note = "") {
    if (!(v >= lo && v <= hi)) fail(k, " = ", v, ": must be in [", lo, ", ", hi, "]", note);
  };
  auto int_range = [](const char* k, int64_t v, int64_t lo, int64_t hi, const char* note = "") {
    if (v < lo || v > hi) fail(k, " = ", v, ": must be in [", lo, ", ", hi, "]", note);
  };
  int_range("train.batch_size", batch_size, 1, 1 << 20);
  int_range("train.grad_accum", grad_accum, 1, 1 << 20);
  int_range("train.steps", steps, 1, INT32_MAX);
  if (!(lr > 0 && lr <= 10)) fail("train.lr = ", lr, ": must be in (0, 10]");
  if (!(min_lr >= 0 && min_lr <= lr)) fail("train.min_lr = ", min_lr, ": must be in [0, train.lr]");
  if (warmup_steps < 0) fail("train.warmup_steps = ", warmup_steps, ": must be >= 0");
  in_range("train.weight_decay", weight_decay, 0, 100);
  if (!(beta1 >= 0 && beta1 < 1)) fail("train.beta1 = ", beta1, ": must be in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) fail("train.beta2 = ", beta2, ": must be in [0, 1)");
  in_range("train.grad_clip", grad_clip, 0, 1e6, " (0: off)");
  in_range("train.comm_timeout", comm_timeout, 0, 1e6, " seconds (0: no bound)");
  if (eval_every < 0) fail("train.eval_every = ", eval_every, ": must be >= 0 (0: off)");
  if (eval_batches < 1) fail("train.eval_batches = ", eval_batches, ": must be >= 1");
  if (checkpoint_every < 0)
    fail("train.checkpoint_every = ", checkpoint_every, ": must be >= 0 (0: only at the end)");
  int_range("train.threads", threads, 0, kMaxThreads, " (0: all cores)");
  if (out_dir.empty()) fail("train.out_dir: must not be empty");
  precision_level();
  int_range("parallel.tp", tp, 1, 1024);
  if (gather != "level" && gather != "bf16")
    fail("parallel.gather = '", gather, "': must be level or bf16");
  if (wire != "bf16" && wire != "f32") fail("parallel.wire = '", wire, "': must be bf16 or f32");
  int_range("parallel.pp", pp, 1, 1024);
  if (pp_wire != "bf16" && pp_wire != "e4m3" && pp_wire != "f32")
    fail("parallel.pp_wire = '", pp_wire, "': must be bf16, e4m3 or f32");
  if (pp > model().n_layer)
    fail("parallel.pp = ", pp, ": more stages than model.n_layer (", model().n_layer,
         "); each stage needs at least one layer");
  if (tp > 1) {
    const GptConfig m = model();
    if (sequence && (static_cast<int64_t>(batch_size) * m.seq_len) % tp != 0)
      fail("parallel.sequence with parallel.tp = ", tp, ": train.batch_size x model.seq_len (",
           static_cast<int64_t>(batch_size) * m.seq_len, " rows) must divide into tp parts");
    if (m.n_head % tp != 0 || m.padded_vocab() % tp != 0)
      fail("parallel.tp = ", tp, ": must divide model.n_head (", m.n_head,
           ") and the padded vocabulary (", m.padded_vocab(), ")");
  }
  if (tokenizer != "gpt2" && tokenizer != "byte")
    fail("data.tokenizer = '", tokenizer, "': must be gpt2 or byte");
  try {
    recipe_plan(recipe);
  } catch (const Error&) {
    fail("precision.recipe = '", recipe, "': must be ", recipe_names());
  }
  if (mx_grad_format != "e4m3" && mx_grad_format != "e5m2")
    fail("precision.mx_grad_format = '", mx_grad_format, "': must be e4m3 or e5m2");
  if (amax_window < 1 || amax_window > 1024)
    fail("precision.amax_window = ", amax_window, ": must be 1..1024");
  if (margin < 0 || margin > 8) fail("precision.margin = ", margin, ": must be 0..8");
  if (grad_scaling != "auto" && grad_scaling != "pre" && grad_scaling != "post" &&
      grad_scaling != "sqrt")
    fail("precision.grad_scaling = '", grad_scaling, "': must be auto, pre, post or sqrt");
  state_formats();
  if (lm_head != "level" && lm_head != "f32" && lm_head != "bf16")
    fail("precision.lm_head = '", lm_head, "': must be level, f32 or bf16");
  int_range("telemetry.every", telemetry_every, 0, INT32_MAX, " (0: off)");
  QuantProbe().set_what_if(what_if);  // names the key when the value is not one it knows
  in_range("telemetry.underflow_alarm", underflow_alarm, 0, 1, " (a fraction; 1: off)");
  in_range("telemetry.saturation_alarm", saturation_alarm, 0, 1, " (a fraction; 1: off)");
  in_range("telemetry.kurtosis_alarm", kurtosis_alarm, 0, 1e6, " (growth factor; 0: off)");
  in_range("telemetry.loss_spike_alarm", loss_spike_alarm, 0, 1e6, " (loss ratio; 0: off)");
  if (kurtosis_alarm > 0 && kurtosis_alarm <= 1)
    fail("telemetry.kurtosis_alarm = ", kurtosis_alarm, ": must be > 1 (a growth factor) or 0 (off)");
  if (loss_spike_alarm > 0 && loss_spike_alarm <= 1)
    fail("telemetry.loss_spike_alarm = ", loss_spike_alarm, ": must be > 1 (a loss ratio) or 0 (off)");
  if (objective != "lm" && objective != "dpo" && objective != "grpo")
    fail("finetune.objective = '", objective, "': must be lm, dpo or grpo");
  in_range("finetune.beta", beta, 1e-6, 1e3);
  int_range("finetune.samples", samples, 2, 1024, " (a group of at least 2)");
  in_range("finetune.clip", clip, 0, 10);
  in_range("finetune.kl", kl, 0, 1e3);
  in_range("finetune.temperature", temperature, 0, 100, " (0: greedy)");
  int_range("finetune.max_new_tokens", max_new_tokens, 1, 1 << 16);
  int_range("finetune.lora_rank", lora_rank, 0, 1 << 16, " (0: full training)");
  in_range("finetune.lora_alpha", lora_alpha, 1e-6, 1e6);
  parse_lora_targets(lora_targets);
  if (lora_rank > 0) {
    const char* why = init_from.empty() ? "needs train.init_from (the frozen base weights)"
                      : tp > 1 || pp > 1 ? "runs without tensor or pipeline parallelism (parallel.tp = 1, parallel.pp = 1)"
                      : recipe_plan(recipe).fine != FineScaling::kNone
                          ? "needs a per-tensor recipe (precision.recipe = delayed or jit)"
                      : level_plan(precision_level()).sharded
                          ? "does not shard its adapters' states: use precision.level = O2"
                          : nullptr;
    if (why != nullptr) fail("finetune.lora_rank = ", lora_rank, ": LoRA ", why);
    lora_layout(model(), lora());  // the rank fits every targeted layer
  }
  if (objective == "lm") return;
  if (init_from.empty())
    fail("finetune.objective = ", objective, ": needs train.init_from (the policy's starting "
         "weights, and the frozen reference model)");
  if (pp > 1)
    fail("finetune.objective = ", objective, ": not with parallel.pp = ", pp,
         " (its per-sequence log-probabilities need the whole model on each rank)");
  if (dpo() && batch_size % 2 != 0)
    fail("train.batch_size = ", batch_size, ": DPO needs an even batch (pairs of rows)");
  if (grpo() && batch_size % samples != 0)
    fail("train.batch_size = ", batch_size, ": GRPO needs a multiple of finetune.samples (",
         samples, ") (each prompt's group in one batch)");
  if (grpo() && max_new_tokens >= model().seq_len)
    fail("finetune.max_new_tokens = ", max_new_tokens, ": must be less than model.seq_len (",
         model().seq_len, ")");
}

LoraSpec TrainConfig::lora() const {
  LoraSpec l;
  l.rank = lora_rank;
  l.alpha = lora_alpha;
  l.targets = parse_lora_targets(lora_targets);
  return l;
}

std::optional<StateFormats> TrainConfig::state_formats() const {
  const std::pair<const char*, const std::string*> keys[] = {
      {"precision.master", &master_format}, {"precision.m1", &m1_format}, {"precision.m2", &m2_format}};
  StateFormats f = level_plan(precision_level()).states;
  DType* slots[] = {&f.master, &f.m1, &f.m2};
  bool any = false;
  for (size_t i = 0; i < 3; ++i) {
    const std::string& v = *keys[i].second;
    if (v == "level") continue;
    const std::optional<DType> t = dtype_from_name(v);
    if (!t || (*t != DType::kF32 && *t != DType::kF16 && *t != DType::kBF16 && *t != DType::kE4M3))
      fail(keys[i].first, " = '", v, "': must be level, f32, f16, bf16 or e4m3");
    *slots[i] = *t;
    any = true;
  }
  if (!any) return std::nullopt;
  if (level_plan(precision_level()).sharded)
    fail("precision.master/m1/m2: not with precision.level = ", level,
         " (its replicas and checkpoints use the level's formats)");
  if (!kernels::adamw_supported(f.master, f.m1, f.m2, f.grad))
    fail("precision.master/m1/m2 = ", dtype_name(f.master), "/", dtype_name(f.m1), "/",
         dtype_name(f.m2), " at level ", level,
         ": not a supported combination (docs/experiments.md lists them)");
  return f;
}

std::string default_tokenizer_dir() { return std::string(FP8LM_SOURCE_DIR) + "/data/gpt2"; }

std::string TrainConfig::tokenizer_path() const {
  return tokenizer_dir.empty() ? default_tokenizer_dir() : tokenizer_dir;
}

std::string TrainConfig::to_toml() const {
  std::ostringstream os;
  std::string section;
  for (const Key& k : keys()) {
    const std::string s = k.name.substr(0, k.name.find('.'));
    if (s != section) {
      os << (section.empty() ? "" : "\n") << "[" << s << "]\n";
      section = s;
    }
    os << k.name.substr(k.name.find('.') + 1) << " = " << k.get(*this) << "\n";
  }
  return os.str();
}

TrainConfig parse_train_config(const std::string& text, const std::string& origin) {
  TrainConfig cfg;
  toml::table table;
  try {
    table = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    fail(origin, ":", b.line, ":", b.column, ": ", e.description());
  }
  for (const auto& [section, node] : table) {
    const std::string s(section.str());
    if (!node.is_table()) fail(origin, ": '", s, "' must be a [section]");
    for (const auto& [name, value] : *node.as_table()) {
      const std::string full = s + "." + std::string(name.str());
      const Key* k = find_key(full);
      if (k == nullptr) fail(origin, ": unknown key ", full);
      k->set(cfg, value, origin + ": ");
    }
  }
  cfg.validate();
  return cfg;
}

void apply_overrides(TrainConfig& cfg, const std::vector<std::string>& sets) {
  TrainConfig next = cfg;  // cfg changes only when every override is valid
  for (const std::string& s : sets) {
    const size_t eq = s.find('=');
    if (eq == std::string::npos) fail("--set ", s, ": expected section.key=value");
    const std::string name = s.substr(0, eq), value = s.substr(eq + 1);
    const Key* k = find_key(name);
    if (k == nullptr) fail("--set ", name, ": unknown key");
    // Parse the value as TOML; bare words are taken as strings.
    toml::table t;
    try {
      t = toml::parse("v = " + value);
    } catch (const toml::parse_error&) {
      // A bare word is a string; TOML strings are UTF-8, so it must be too (config.toml
      // would otherwise not read back as the run's configuration).
      if (!valid_utf8(value)) fail("--set ", name, ": the value is not valid UTF-8");
      t = toml::table{{"v", value}};
    }
    // One value: "1\nx = 2" would otherwise smuggle in text that is silently dropped.
    if (t.size() != 1 || value.find_first_of("\n\r") != std::string::npos)
      fail("--set ", name, ": expected one value, got ",
           nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    k->set(next, *t.get("v"), "--set ");
  }
  next.validate();
  cfg = std::move(next);
}

}  // namespace fp8lm
