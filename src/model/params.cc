#include "model/params.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "core/check.h"
#include "kernels/cast.h"
#include "tensor/safetensors.h"

namespace fp8lm {

std::pair<int, int> stage_layers(const GptConfig& cfg, PpStage pp) {
  FP8LM_CHECK(pp.size >= 1 && pp.rank >= 0 && pp.rank < pp.size, "pipeline stage ", pp.rank,
              " of ", pp.size);
  if (pp.size > cfg.n_layer)
    fail("parallel.pp = ", pp.size, " stages for ", cfg.n_layer, " layers (model.n_layer): each "
         "stage needs at least one");
  const int base = cfg.n_layer / pp.size, extra = cfg.n_layer % pp.size;
  const int first = pp.rank * base + std::min(pp.rank, extra);
  return {first, first + base + (pp.rank < extra ? 1 : 0)};
}

std::vector<ParamSpec> param_layout(const GptConfig& cfg, TpShard tp, PpStage pp) {
  cfg.validate();
  FP8LM_CHECK(tp.size >= 1 && tp.rank >= 0 && tp.rank < tp.size, "tensor-parallel rank ", tp.rank,
              " of ", tp.size);
  if (cfg.n_head % tp.size != 0 || cfg.padded_vocab() % tp.size != 0)
    fail("parallel.tp = ", tp.size, " must divide model.n_head (", cfg.n_head,
         ") and the padded vocabulary (", cfg.padded_vocab(), ")");
  const int64_t C = cfg.n_embd;
  const auto [l0, l1] = stage_layers(cfg, pp);
  std::vector<ParamSpec> specs;
  size_t offset = 0;
  bool here = true;  // the tensor belongs to this stage
  auto add = [&](std::string name, Shape full, Split split = Split::kNone, bool linear = false) {
    if (!here) return;
    std::vector<int64_t> dims(full.begin(), full.end());
    if (split == Split::kRows) dims.front() /= tp.size;
    if (split == Split::kCols || split == Split::kQkv) dims.back() /= tp.size;
    const Shape shape(dims.begin(), dims.end());
    specs.push_back({std::move(name), shape, offset, linear, split, full});
    offset += static_cast<size_t>(shape.numel());
  };
  here = pp.first() || pp.last();
  add("wte.weight", {cfg.padded_vocab(), C}, Split::kRows);
  here = pp.first();
  add("wpe.weight", {cfg.seq_len, C});
  here = true;
  for (int l = l0; l < l1; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {C});
    add(p + "ln_1.bias", {C});
    add(p + "attn.c_attn.weight", {C, 3 * C}, Split::kQkv, true);
    add(p + "attn.c_attn.bias", {3 * C}, Split::kQkv);
    add(p + "attn.c_proj.weight", {C, C}, Split::kRows, true);
    add(p + "attn.c_proj.bias", {C});
    add(p + "ln_2.weight", {C});
    add(p + "ln_2.bias", {C});
    add(p + "mlp.c_fc.weight", {C, 4 * C}, Split::kCols, true);
    add(p + "mlp.c_fc.bias", {4 * C}, Split::kCols);
    add(p + "mlp.c_proj.weight", {4 * C, C}, Split::kRows, true);
    add(p + "mlp.c_proj.bias", {C});
  }
  here = pp.last();
  add("ln_f.weight", {C});
  add("ln_f.bias", {C});
  return specs;
}

namespace {

// Calls copy(full_elem, shard_elem, n) for each contiguous run of the shard.
template <typename Copy>
void for_each_run(const ParamSpec& s, TpShard tp, Copy&& copy) {
  const size_t n = s.numel();
  if (s.split == Split::kNone || tp.size == 1) return copy(0, 0, n);
  if (s.split == Split::kRows) return copy(static_cast<size_t>(tp.rank) * n, 0, n);
  // Column splits: per row, one run (kCols) or one per q, k, v section (kQkv).
  const size_t cols = static_cast<size_t>(s.full_shape[s.full_shape.rank() - 1]);
  const size_t rows = static_cast<size_t>(s.full_shape.numel()) / cols;
  const size_t sections = s.split == Split::kQkv ? 3 : 1;
  const size_t run = cols / sections / static_cast<size_t>(tp.size);
  for (size_t r = 0; r < rows; ++r)
    for (size_t q = 0; q < sections; ++q)
      copy(r * cols + q * (cols / sections) + static_cast<size_t>(tp.rank) * run,
           r * (cols / static_cast<size_t>(tp.size)) + q * run, run);
}

}  // namespace

void extract_shard(const ParamSpec& s, TpShard tp, const void* full, void* shard,
                   size_t elem_bytes) {
  for_each_run(s, tp, [&](size_t f, size_t h, size_t n) {
    std::memcpy(static_cast<uint8_t*>(shard) + h * elem_bytes,
                static_cast<const uint8_t*>(full) + f * elem_bytes, n * elem_bytes);
  });
}

void place_shard(const ParamSpec& s, TpShard tp, const void* shard, void* full, size_t elem_bytes) {
  for_each_run(s, tp, [&](size_t f, size_t h, size_t n) {
    std::memcpy(static_cast<uint8_t*>(full) + f * elem_bytes,
                static_cast<const uint8_t*>(shard) + h * elem_bytes, n * elem_bytes);
  });
}

namespace {
size_t total(const std::vector<ParamSpec>& s) { return s.back().offset + s.back().numel(); }
}  // namespace

GptParams::GptParams(const GptConfig& cfg)
    : cfg_(cfg),
      specs_(param_layout(cfg)),
      data_(DType::kF32, {static_cast<int64_t>(total(specs_))}, MemCategory::kMaster) {
  std::memset(data_.data(), 0, data_.bytes());
}

std::vector<ScaledView> GptParams::views() const {
  std::vector<ScaledView> r;
  for (size_t i = 0; i < specs_.size(); ++i)
    r.push_back(tensor_view(static_cast<const void*>(at(i)), DType::kF32, specs_[i].shape, nullptr));
  return r;
}

Gpt2Init::Gpt2Init(const GptConfig& cfg, uint64_t seed)
    : cfg_(cfg), specs_(param_layout(cfg)), rng_(seed) {}

void Gpt2Init::next(size_t i, float* out) {
  FP8LM_CHECK(i == next_, "Gpt2Init: tensor ", i, " asked for, ", next_, " is next");
  ++next_;
  const ParamSpec& s = specs_[i];
  const size_t n = s.numel();
  std::fill(out, out + n, 0.0f);
  if (s.name.ends_with("ln_1.weight") || s.name.ends_with("ln_2.weight") ||
      s.name == "ln_f.weight") {
    std::fill(out, out + n, 1.0f);
  } else if (!s.name.ends_with(".bias")) {
    const bool residual_proj = s.name.ends_with("c_proj.weight");
    const float proj_std = 0.02f / std::sqrt(2.0f * static_cast<float>(cfg_.n_layer));
    std::normal_distribution<float> d(0.0f, residual_proj ? proj_std : 0.02f);
    // wte's padding rows stay zero.
    const size_t drawn =
        i == 0 ? static_cast<size_t>(cfg_.vocab_size) * static_cast<size_t>(cfg_.n_embd) : n;
    for (size_t k = 0; k < drawn; ++k) out[k] = d(rng_);
  }
}

void Gpt2Init::next_named(const std::string& name, float* out) {
  std::vector<float> dropped;
  for (size_t i = next_; i < specs_.size(); ++i) {
    if (specs_[i].name == name) return next(i, out);
    dropped.resize(specs_[i].numel());
    next(i, dropped.data());
  }
  fail("Gpt2Init: no tensor ", name, " after tensor ", next_);
}

void GptParams::init_gpt2(uint64_t seed) {
  Gpt2Init init(cfg_, seed);
  for (size_t i = 0; i < specs_.size(); ++i) init.next(i, at(i));
}

void GptParams::save(const std::string& path) const {
  std::vector<std::pair<std::string, ConstTensorView>> out;
  for (size_t i = 0; i < specs_.size(); ++i) {
    Shape shape = specs_[i].shape;
    if (i == 0) shape = Shape{cfg_.vocab_size, cfg_.n_embd};
    out.emplace_back(specs_[i].name, ConstTensorView{at(i), DType::kF32, shape});
  }
  write_safetensors(path, out, {{"format", "pt"}, {"fp8lm.preset", cfg_.preset}});
}

void GptParams::load(const std::string& path) {
  const SafetensorsFile f(path);
  if (f.tensors().size() != specs_.size())
    fail(path, ": ", f.tensors().size(), " tensors, the model (", cfg_.n_layer, " layers) has ",
         specs_.size());
  for (size_t i = 0; i < specs_.size(); ++i) {
    const ParamSpec& s = specs_[i];
    const SafetensorsEntry* e = f.find(s.name);
    if (e == nullptr) fail(path, ": missing tensor ", s.name);
    const Shape want = i == 0 ? Shape{cfg_.vocab_size, cfg_.n_embd} : s.shape;
    if (!(e->view.shape == want))
      fail(path, ": ", s.name, " has shape ", e->view.shape.str(), ", the model needs ",
           want.str());
    if (!is_float(e->view.dtype))
      fail(path, ": ", s.name, " has dtype ", dtype_name(e->view.dtype), ", need a float type");
    kernels::dequantize(at(i), e->view.data, e->view.dtype, e->view.numel(), 1.0f);
    const float* v = at(i);
    for (size_t k = 0, n = e->view.numel(); k < n; ++k)
      if (!std::isfinite(v[k])) fail(path, ": ", s.name, "[", k, "] is not finite (", v[k], ")");
  }
}

}  // namespace fp8lm
