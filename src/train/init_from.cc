#include "train/init_from.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/check.h"
#include "kernels/cast.h"
#include "model/params.h"
#include "train/checkpoint.h"

namespace fp8lm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Where the values and the configuration of `from` are.
struct Located {
  std::string file;       // model.safetensors
  std::string trainer;    // fp8lm: the checkpoint folder (its trainer.json); else empty
  std::string hf_config;  // Hugging Face: config.json beside the file, when present
};

Located locate(const std::string& from) {
  if (!fs::exists(from)) fail("train.init_from = ", from, ": no such file or folder");
  Located l;
  fs::path dir = fs::is_directory(from) ? fs::path(from) : fs::path(from).parent_path();
  if (dir.empty()) dir = ".";
  if (fs::is_directory(from) && (fs::exists(dir / "trainer.json") || fs::exists(dir / "checkpoints")))
    dir = resolve_checkpoint(from);
  l.file = fs::is_directory(from) ? (dir / "model.safetensors").string() : from;
  if (!fs::is_regular_file(l.file) && fs::is_regular_file(dir / "adapters.safetensors"))
    fail("train.init_from = ", from, ": a LoRA checkpoint (adapters only, in ", dir.string(),
         "); fp8lm merge makes a model of it");
  if (!fs::is_regular_file(l.file))
    fail("train.init_from = ", from, ": no model.safetensors in ", dir.string());
  if (fs::exists(dir / "trainer.json"))
    l.trainer = dir.string();
  else if (fs::is_regular_file(dir / "config.json"))
    l.hf_config = (dir / "config.json").string();
  return l;
}

std::string prefix_of(const SafetensorsFile& f) {
  if (f.find("transformer.wte.weight") != nullptr) return "transformer.";
  if (f.find("wte.weight") != nullptr) return "";
  fail(f.path(), ": no wte.weight (nor transformer.wte.weight): not a GPT-2 model");
}

const SafetensorsEntry& need(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsEntry* e = f.find(name);
  if (e == nullptr) fail(f.path(), ": missing tensor ", name);
  return *e;
}

// The layer index of "h.N.…" (after the prefix), or -1.
int layer_of(std::string_view name) {
  if (!name.starts_with("h.")) return -1;
  name.remove_prefix(2);
  const size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot > 4) return -1;
  int n = 0;
  for (const char c : name.substr(0, dot)) {
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}

// Hugging Face's config.json: the keys that change what GPT-2 computes must describe the
// model fp8lm computes; the shape keys must agree with the file.
void check_hf_config(const std::string& path, const GptConfig& from_file, int* n_head) {
  std::ifstream in(path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(path, ": not a JSON object");
  auto number = [&](const char* key) -> const json* {
    if (!j.contains(key)) return nullptr;
    if (!j[key].is_number_integer()) fail(path, ": ", key, " is not an integer");
    return &j[key];
  };
  auto agree = [&](const char* key, int want) {
    if (const json* v = number(key); v != nullptr && v->get<int64_t>() != want)
      fail(path, ": ", key, " = ", v->get<int64_t>(), " but the model file has ", want);
  };
  if (j.contains("model_type") && j["model_type"] != "gpt2")
    fail(path, ": model_type = ", j["model_type"].dump(), ", fp8lm loads gpt2");
  agree("n_layer", from_file.n_layer);
  agree("n_embd", from_file.n_embd);
  agree("vocab_size", from_file.vocab_size);
  if (const json* h = number("n_head")) {
    if (h->get<int64_t>() < 1 || from_file.n_embd % h->get<int64_t>() != 0)
      fail(path, ": n_head = ", h->get<int64_t>(), " does not divide n_embd ", from_file.n_embd);
    *n_head = h->get<int>();
  }
  if (j.contains("activation_function") && j["activation_function"] != "gelu_new" &&
      j["activation_function"] != "gelu_pytorch_tanh")
    fail(path, ": activation_function = ", j["activation_function"].dump(),
         ", fp8lm computes GPT-2's tanh GELU (gelu_new)");
  if (j.contains("layer_norm_epsilon") &&
      (!j["layer_norm_epsilon"].is_number() || j["layer_norm_epsilon"].get<double>() != 1e-5))
    fail(path, ": layer_norm_epsilon = ", j["layer_norm_epsilon"].dump(),
         ", fp8lm's LayerNorm uses 1e-5");
  for (const char* key : {"scale_attn_by_inverse_layer_idx", "add_cross_attention"})
    if (j.contains(key) && j[key] == true) fail(path, ": ", key, " = true is not GPT-2 as fp8lm computes it");
  if (j.contains("scale_attn_weights") && j["scale_attn_weights"] == false)
    fail(path, ": scale_attn_weights = false is not GPT-2 as fp8lm computes it");
}

void check_float(const SafetensorsFile& f, const SafetensorsEntry& e) {
  const DType d = e.view.dtype;
  if (d != DType::kF32 && d != DType::kF16 && d != DType::kBF16)
    fail(f.path(), ": ", e.name, " has dtype ", dtype_name(d),
         "; starting weights must be F32, F16 or BF16 (fp8lm convert --to f32 makes them so)");
}

// The configuration of the file (n_head as located), seq_len applied.
GptConfig config_of(const Located& l, const SafetensorsFile& f, const std::string& prefix,
                    int seq_len) {
  const SafetensorsEntry& wte = need(f, prefix + "wte.weight");
  const SafetensorsEntry& wpe = need(f, prefix + "wpe.weight");
  if (wte.view.shape.rank() != 2 || wpe.view.shape.rank() != 2 ||
      wte.view.shape[1] != wpe.view.shape[1])
    fail(f.path(), ": wte.weight ", wte.view.shape.str(), " and wpe.weight ",
         wpe.view.shape.str(), " are not [vocab, C] and [positions, C]");
  GptConfig c;
  c.vocab_size = static_cast<int>(std::min<int64_t>(wte.view.shape[0], 1 << 25));
  c.n_embd = static_cast<int>(std::min<int64_t>(wte.view.shape[1], 1 << 20));
  const int positions = static_cast<int>(std::min<int64_t>(wpe.view.shape[0], 1 << 20));
  int layers = 0;
  for (const SafetensorsEntry& e : f.tensors())
    if (std::string_view(e.name).starts_with(prefix))
      layers = std::max(layers, layer_of(std::string_view(e.name).substr(prefix.size())) + 1);
  c.n_layer = layers;
  if (!l.trainer.empty()) {
    const GptConfig t = model_config_of(read_trainer_json(l.trainer), l.trainer);
    if (t.n_layer != c.n_layer || t.n_embd != c.n_embd || t.vocab_size != c.vocab_size ||
        t.seq_len != positions)
      fail(f.path(), ": its tensors do not match the model of ", l.trainer, "/trainer.json");
    c.n_head = t.n_head;
    c.preset = t.preset;
  } else {
    // config.json says how many heads; without it, GPT-2's heads are 64 wide at every size.
    c.n_head = 0;
    if (!l.hf_config.empty()) check_hf_config(l.hf_config, c, &c.n_head);
    if (c.n_head == 0 && c.n_embd % 64 != 0)
      fail(f.path(), ": n_embd ", c.n_embd, " is not a multiple of GPT-2's 64-wide heads; put a "
           "config.json with n_head beside it");
    if (c.n_head == 0) c.n_head = c.n_embd / 64;
  }
  if (seq_len > positions)
    fail("model.seq_len = ", seq_len, ": ", f.path(), " has ", positions, " positions (wpe rows)");
  c.seq_len = seq_len > 0 ? seq_len : positions;
  try {
    c.validate();
  } catch (const Error& e) {
    fail(f.path(), ": ", e.what());
  }
  return c;
}

}  // namespace

PretrainedWeights::PretrainedWeights(const std::string& from, int seq_len)
    : file_([&] {
        const Located l = locate(from);
        trainer_dir_ = l.trainer;
        hf_config_ = l.hf_config;
        return l.file;
      }()) {
  const Located l{file_.path(), trainer_dir_, hf_config_};
  prefix_ = prefix_of(file_);
  cfg_ = config_of(l, file_, prefix_, seq_len);
  // Every tensor the model needs, with its shape (wte: the vocabulary's rows; wpe: the
  // file's positions, of which the first seq_len are used).
  std::set<std::string> used;
  const std::vector<ParamSpec> specs = param_layout(cfg_);
  for (const ParamSpec& s : specs) {
    const SafetensorsEntry& e = need(file_, prefix_ + s.name);
    Shape want = s.shape;
    if (s.name == "wte.weight") want = Shape{cfg_.vocab_size, cfg_.n_embd};
    if (s.name == "wpe.weight") want = e.view.shape;
    if (!(e.view.shape == want))
      fail(file_.path(), ": ", e.name, " has shape ", e.view.shape.str(), ", the model needs ",
           want.str());
    check_float(file_, e);
    used.insert(e.name);
  }
  // Nothing else but Hugging Face's causal-mask buffers and a tied LM head.
  for (const SafetensorsEntry& e : file_.tensors()) {
    if (used.count(e.name)) continue;
    const std::string_view n = std::string_view(e.name).substr(
        std::string_view(e.name).starts_with(prefix_) ? prefix_.size() : 0);
    if (layer_of(n) >= 0 && (n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias")))
      continue;
    if (e.name == "lm_head.weight") {
      const SafetensorsEntry& wte = need(file_, prefix_ + "wte.weight");
      check_float(file_, e);
      if (!(e.view.shape == wte.view.shape))
        fail(file_.path(), ": lm_head.weight ", e.view.shape.str(), " is not wte's shape ",
             wte.view.shape.str());
      const size_t numel = static_cast<size_t>(wte.view.numel());
      std::vector<float> a(numel), b(numel);
      kernels::dequantize(a.data(), wte.view.data, wte.view.dtype, numel, 1.0f);
      kernels::dequantize(b.data(), e.view.data, e.view.dtype, numel, 1.0f);
      if (std::memcmp(a.data(), b.data(), numel * sizeof(float)) != 0)
        fail(file_.path(), ": lm_head.weight differs from wte.weight; fp8lm's GPT-2 ties them");
      continue;
    }
    fail(file_.path(), ": unexpected tensor ", e.name, " (not part of GPT-2 as fp8lm computes it)");
  }
}

const SafetensorsEntry& PretrainedWeights::entry(const std::string& name) const {
  return need(file_, prefix_ + name);
}

void PretrainedWeights::read(const std::string& name, float* out) const {
  const SafetensorsEntry& e = entry(name);
  size_t numel = static_cast<size_t>(e.view.numel());
  const size_t C = static_cast<size_t>(cfg_.n_embd);
  if (name == "wte.weight")  // padding rows
    std::fill(out + numel, out + static_cast<size_t>(cfg_.padded_vocab()) * C, 0.0f);
  if (name == "wpe.weight") numel = static_cast<size_t>(cfg_.seq_len) * C;  // first rows
  kernels::dequantize(out, e.view.data, e.view.dtype, numel, 1.0f);
  for (size_t k = 0; k < numel; ++k)
    if (!std::isfinite(out[k]))
      fail(file_.path(), ": ", e.name, "[", k, "] is not finite (", out[k], ")");
  file_.evict(e);  // the caller has the values: the file's pages need not stay resident
}

GptConfig pretrained_config(const std::string& from, int seq_len) {
  const Located l = locate(from);
  const SafetensorsFile f(l.file);
  return config_of(l, f, prefix_of(f), seq_len);
}

}  // namespace fp8lm
