#include "model/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/memory.h"
#include "kernels/cast.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"

namespace fp8lm {
namespace {

int64_t i64(size_t v) { return static_cast<int64_t>(v); }
// LM-head chunks: each packs all of wte twice (logits, dlnf) and adds into all of dwte, so
// chunks are large, yet their logits (≤ 64 MiB) stay well below the model states.
constexpr size_t kLogitChunkFloats = size_t{16} << 20;

}  // namespace

struct Gpt::Block {
  Linear attn, proj, fc, fcproj;
  ScaledTensor g_attn, g_proj, g_fc, g_fcproj;  // empty when frozen (LoRA)
  // The layers in the order of kLoraTargetNames.
  Linear& layer(int t) { return t == 0 ? attn : t == 1 ? proj : t == 2 ? fc : fcproj; }
  Tensor resid_in, ln1_mean, ln1_rstd, qkv, lse, att16, resid_mid, ln2_mean, ln2_rstd, fch;

  // C: the model's width; tp: the tensor-parallel ranks (the heads, c_attn's and c_fc's
  // outputs and the c_proj inputs are split tp ways; NH: this rank's heads).
  // Rl: the rows of the residual stream this rank holds (B·T / tp with sequence parallelism).
  // Without `saves` the activations (acts()) are left empty, to be lent by another block.
  Block(ComputeMode mode, size_t B, size_t T, size_t C, size_t NH, size_t tp, size_t Rl,
        const LinearWorkspace& ws, const Fp8Options& fp8, bool with_grads, const LoraSpec& lora,
        bool saves)
      : attn(mode, C, 3 * C / tp, B * T, ws, fp8, saves),
        proj(mode, C / tp, C, B * T, ws, fp8, saves),
        fc(mode, C, 4 * C / tp, B * T, ws, fp8, saves),
        fcproj(mode, 4 * C / tp, C, B * T, ws, fp8, saves) {
    const size_t Cl = C / tp;
    const int64_t BT = saves ? i64(B * T) : 0;  // 0 rows: no storage
    const auto act = MemCategory::kActivations;
    const DType wide = mode == ComputeMode::kF32 ? DType::kF32 : DType::kBF16;
    const int64_t R = saves ? i64(Rl) : 0;
    resid_in = Tensor(DType::kF32, {R, i64(C)}, act);
    ln1_mean = Tensor(DType::kF32, {R}, act);
    ln1_rstd = Tensor(DType::kF32, {R}, act);
    qkv = Tensor(wide, {BT, i64(3 * Cl)}, act);
    lse = Tensor(DType::kF32, {saves ? i64(B * NH * T) : 0}, act);
    if (mode == ComputeMode::kFP8) att16 = Tensor(DType::kBF16, {BT, i64(Cl)}, act);
    resid_mid = Tensor(DType::kF32, {R, i64(C)}, act);
    ln2_mean = Tensor(DType::kF32, {R}, act);
    ln2_rstd = Tensor(DType::kF32, {R}, act);
    fch = Tensor(wide, {BT, i64(4 * Cl)}, act);
    if (lora.on()) {  // adapters on the targets; the base weights are frozen
      for (int t = 0; t < 4; ++t)
        if ((lora.targets >> t) & 1)
          layer(t).add_adapter(static_cast<size_t>(lora.rank), lora.scale(), with_grads);
      return;
    }
    if (!with_grads) return;
    g_attn = attn.make_grad();
    g_proj = proj.make_grad();
    g_fc = fc.make_grad();
    g_fcproj = fcproj.make_grad();
  }

  // The block's own activation tensors, and with the layers' saved inputs (acts): allocated
  // or not, in a fixed order, the same in every block.
  std::vector<Tensor*> own() {
    return {&resid_in, &ln1_mean,  &ln1_rstd, &qkv,      &lse,
            &att16,    &resid_mid, &ln2_mean, &ln2_rstd, &fch};
  }
  std::vector<Tensor*> acts() {
    std::vector<Tensor*> v = own();
    for (Linear* lin : {&attn, &proj, &fc, &fcproj}) lin->input_tensors(v);
    return v;
  }
};

Gpt::Gpt(const GptConfig& cfg, ComputeMode mode, size_t B, size_t T, const Fp8Options& fp8,
         bool with_grads, TpComm* tp, PpComm* pp, const LoraSpec& lora)
    : cfg_(cfg),
      tp_(tp != nullptr && tp->shard().size > 1 ? tp : nullptr),
      shard_(tp_ != nullptr ? tp->shard() : TpShard{}),
      pp_(pp != nullptr && pp->stage().size > 1 ? pp : nullptr),
      stage_(pp_ != nullptr ? pp->stage() : PpStage{}),
      specs_(param_layout(cfg, shard_, stage_)),
      mode_(mode),
      B_(B),
      T_(T),
      BT_(B * T),
      with_grads_(with_grads),
      lora_(lora) {
  if (lora_.on()) {
    if (tp_ != nullptr || pp_ != nullptr)
      fail("LoRA (finetune.lora_rank) runs without tensor or pipeline parallelism");
    adapter_specs_ = lora_layout(cfg, lora_);
  }
  if (B < 1 || T < 1 || T > static_cast<size_t>(cfg.seq_len))
    fail("batch shape ", B, "x", T, " does not fit the model (seq_len ", cfg.seq_len, ")");
  const size_t C = static_cast<size_t>(cfg.n_embd), NH = static_cast<size_t>(cfg.n_head);
  const size_t tps = static_cast<size_t>(shard_.size);
  Cl_ = C / tps;
  NHl_ = NH / tps;
  Vpl_ = static_cast<size_t>(cfg.padded_vocab()) / tps;
  v0_ = static_cast<size_t>(shard_.rank) * Vpl_;
  const TpOptions opt = tp_ != nullptr ? tp_->options() : TpOptions{};
  sp_ = tp_ != nullptr && opt.sequence;
  if (sp_ && BT_ % tps != 0)
    fail("sequence parallelism: ", BT_, " rows (batch ", B, " x ", T, ") do not split into ", tps,
         " parts");
  Rl_ = sp_ ? BT_ / tps : BT_;
  r0_ = sp_ ? static_cast<size_t>(shard_.rank) * Rl_ : 0;
  wire_ = mode == ComputeMode::kF32 ? DType::kF32 : opt.wire;
  gather_bf16_ = opt.gather_bf16 && mode != ComputeMode::kF32;
  Vl_ = std::min(Vpl_, static_cast<size_t>(cfg.vocab_size) - std::min(v0_, size_t(cfg.vocab_size)));
  const auto ws = MemCategory::kWorkspace;

  // Layer staging, shared: the largest weight gradient in FP32 (fp8 accumulation) and the
  // largest output gradient.
  const bool fine = mode == ComputeMode::kFP8 && fp8.recipe->fine != FineScaling::kNone;
  if (mode == ComputeMode::kFP8 && (with_grads || fine))
    ws_w_ = Tensor(DType::kF32, {i64(4 * C * C)}, ws);
  if (mode != ComputeMode::kF32 && with_grads)
    ws_dy_ = Tensor(mode == ComputeMode::kBF16 ? DType::kBF16 : fp8.dy,
                    {i64(BT_), i64(4 * C)}, ws);
  LinearWorkspace lws{ws_w_.as<float>(), ws_dy_.data()};
  if (fine) {  // block-scaled staging: W in E4M3, dy's second orientation, scale grids
    ws_w8_ = Tensor(DType::kU8, {i64(4 * C * C)}, ws);
    ws_w8_scales_ = Tensor(DType::kU8, {i64(linear_grid_bytes(4 * C, C))}, ws);
    lws.w8 = ws_w8_.data();
    lws.w8_scales = ws_w8_scales_.data();
    if (with_grads) {
      ws_dyt8_ = Tensor(DType::kU8, {i64(BT_), i64(4 * C)}, ws);
      ws_dy_scales_ = Tensor(DType::kU8, {i64(2 * linear_grid_bytes(BT_, 4 * C))}, ws);
      lws.dyt8 = ws_dyt8_.data();
      lws.dy_scales = ws_dy_scales_.data();
      lws.dyt_scales = static_cast<uint8_t*>(ws_dy_scales_.data()) + linear_grid_bytes(BT_, 4 * C);
    }
  }

  // Each tensor by name (Hugging Face's: h.L.attn.c_attn.weight, ...).
  auto find = [&](const std::string& name) {
    for (size_t i = 0; i < specs_.size(); ++i)
      if (specs_[i].name == name) return i;
    return npos;
  };
  wte_ = find("wte.weight");
  wpe_ = find("wpe.weight");
  lnf_w_ = find("ln_f.weight");
  lnf_b_ = find("ln_f.bias");
  const auto [l0, l1] = stage_layers(cfg, stage_);
  for (int l = l0; l < l1; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    auto at = [&](const char* name) {
      const size_t i = find(h + name);
      if (i == npos) fail("the parameter layout has no ", h, name);
      return i;
    };
    block_specs_.push_back({at("ln_1.weight"), at("ln_1.bias"), at("attn.c_attn.weight"),
                            at("attn.c_attn.bias"), at("attn.c_proj.weight"),
                            at("attn.c_proj.bias"), at("ln_2.weight"), at("ln_2.bias"),
                            at("mlp.c_fc.weight"), at("mlp.c_fc.bias"), at("mlp.c_proj.weight"),
                            at("mlp.c_proj.bias")});
  }
  // Without gradients no block's activations outlive the next block: one set is passed
  // along the blocks (hand_over), a 1/L share of the activation memory.
  pass_along_ = !with_grads && l1 - l0 > 1;
  const int64_t before = mem_stats(MemCategory::kActivations).current;
  for (int l = l0; l < l1; ++l)
    blocks_.push_back(std::make_unique<Block>(mode, B, T, C, NHl_, tps, Rl_, lws, fp8, with_grads,
                                              lora_, !pass_along_ || l == l0));
  for (auto& k : blocks_)
    for (int t = 0; t < 4; ++t)
      if (k->layer(t).has_adapter()) adapter_layer_.push_back(&k->layer(t));
  // FP8 scales shared by every rank that casts a part of the same tensor: the shards of a
  // tensor-parallel group and, across data-parallel copies, the micro-batches' activations
  // and gradients, so every rank derives one scale and one amax history (and a checkpoint
  // holds the state of all of them).
  if (tp != nullptr && tp->scaling_ranks() > 1 && mode == ComputeMode::kFP8) {
    AmaxShare share = [tp](float a) { return tp->max_amax(a); };
    const bool copies = tp->scaling_ranks() > static_cast<int>(tps);  // data-parallel
    for (auto& k : blocks_) {
      k->attn.set_amax_share(share, copies, true);  // column-parallel: dy split
      k->proj.set_amax_share(share, true, copies);  // row-parallel: x split
      k->fc.set_amax_share(share, copies, true);
      k->fcproj.set_amax_share(share, true, copies);
    }
  }
  const auto act = MemCategory::kActivations;
  resid_final_ = Tensor(DType::kF32, {i64(Rl_), i64(C)}, act);  // sent on by other stages
  if (last()) {
    lnf_ = Tensor(DType::kF32, {i64(BT_), i64(C)}, act);  // gathered: the LM head's input
    lnf_mean_ = Tensor(DType::kF32, {i64(Rl_)}, act);
    lnf_rstd_ = Tensor(DType::kF32, {i64(Rl_)}, act);
  }
  activation_bytes_ = static_cast<size_t>(mem_stats(MemCategory::kActivations).current - before);

  // Non-Linear parameters: FP32 values (all but wte) and gradients, packed in spec order.
  size_t n_small = 0, n_grad = 0;
  small_off_.assign(specs_.size(), 0);
  grad_off_.assign(specs_.size(), 0);
  grad8_.resize(specs_.size());
  const ScalingRecipe jit_e4m3{DType::kE4M3, ScalingTiming::kJustInTime};
  for (size_t i = 0; i < specs_.size(); ++i) {
    const ParamSpec& s = specs_[i];
    if (s.linear_weight) continue;
    if (i != wte_) {
      small_off_[i] = n_small;
      n_small += s.numel();
    }
    // Frozen (LoRA): the small tensors' gradients are computed into workspace and dropped;
    // wte's (the largest) not at all.
    if (!with_grads || (lora_.on() && i == wte_)) continue;
    grad_off_[i] = n_grad;
    n_grad += s.numel();
    if (mode == ComputeMode::kFP8 && !lora_.on())
      grad8_[i] = ScaledTensor(s.shape, jit_e4m3, MemCategory::kGradients);
  }
  small_ = Tensor(DType::kF32, {i64(n_small)}, MemCategory::kWeights);
  if (with_grads) {
    grads_ = Tensor(DType::kF32, {i64(n_grad)},
                    mode == ComputeMode::kFP8 || lora_.on() ? ws : MemCategory::kGradients);
    std::memset(grads_.data(), 0, grads_.bytes());
  }
  for (ScaledTensor& g : grad8_)
    if (g.data.data() != nullptr) std::memset(g.data.data(), 0, g.data.bytes());

  ws_a_ = Tensor(DType::kF32, {i64(BT_), i64(4 * C)}, ws);
  ws_b_ = Tensor(DType::kF32, {i64(BT_), i64(4 * C)}, ws);
  ws_qkv_ = Tensor(DType::kF32, {i64(BT_), i64(3 * C)}, ws);
  ws_dres_ = Tensor(DType::kF32, {i64(BT_), i64(C)}, ws);
  if (sp_) ws_full_ = Tensor(DType::kF32, {i64(BT_), i64(C)}, ws);  // gathered rows
  // Sequence parallelism: the replicated parameters whose gradients come from this rank's
  // rows only, summed over the group after backward: the LayerNorms', and the c_proj biases'
  // where the c_proj layers gather their output gradient as FP8 from every rank's rows.
  fp8_grad_rows_ = sp_ && mode == ComputeMode::kFP8 && !fine && !gather_bf16_;
  for (size_t i = 0; sp_ && i < specs_.size(); ++i)
    if (specs_[i].name.find("ln_") != std::string::npos ||
        (fp8_grad_rows_ && specs_[i].name.ends_with("c_proj.bias")))
      sp_sum_specs_.push_back(i);
  // Equal chunks (a thin last one would cost as many wte packs as a full one).
  const size_t max_rows =
      std::clamp<size_t>(kLogitChunkFloats / Vpl_, 1, std::max<size_t>(1, BT_ / 2));
  const size_t chunks = (BT_ + max_rows - 1) / max_rows;
  chunk_rows_ = (BT_ + chunks - 1) / chunks;
  if (last()) {
    ws_logits_ = Tensor(DType::kF32, {i64(chunk_rows_), i64(Vpl_)}, ws);
    ws_losses_ = Tensor(DType::kF32, {i64(BT_)}, ws);
  }

  // Every saved activation, for the pipeline's slots.
  for (auto& k : blocks_) {
    for (Tensor* t : k->own())
      if (t->data() != nullptr) live_.push_back(t);
    for (Linear* lin : {&k->attn, &k->proj, &k->fc, &k->fcproj})
      lin->saved_state(live_, live_scales_);
  }
  for (Tensor* t : {&resid_final_, &lnf_, &lnf_mean_, &lnf_rstd_})
    if (t->data() != nullptr) live_.push_back(t);
  stash_.resize(1);
}

void Gpt::hand_over(size_t to) {
  if (to == acts_at_) return;
  const std::vector<Tensor*> from = blocks_[acts_at_]->acts(), into = blocks_[to]->acts();
  for (size_t i = 0; i < from.size(); ++i) std::swap(*from[i], *into[i]);
  acts_at_ = to;
}

void Gpt::set_slots(size_t n) {
  FP8LM_CHECK(n >= 1 && (n == 1 || with_grads_), "set_slots: ", n,
              " slots (at least one; more only for a model with gradients)");
  select_slot(0);
  while (stash_.size() > n) stash_.pop_back();
  const int64_t before = mem_stats(MemCategory::kActivations).current;
  while (stash_.size() < n) {
    Saved s;
    for (const Tensor* t : live_) s.tensors.emplace_back(t->dtype(), t->shape(), t->category());
    s.scales.assign(live_scales_.size(), 1.0f);
    stash_.push_back(std::move(s));
  }
  activation_bytes_ += static_cast<size_t>(mem_stats(MemCategory::kActivations).current - before);
}

void Gpt::select_slot(size_t slot) {
  FP8LM_CHECK(slot < stash_.size(), "activation slot ", slot, " of ", stash_.size());
  if (slot == held_) return;
  // Swap the held slot out into its (empty) stash entry, then the wanted one in.
  for (size_t from : {held_, slot}) {
    Saved& s = stash_[from];
    s.tensors.resize(live_.size());
    s.scales.resize(live_scales_.size(), 1.0f);
    for (size_t i = 0; i < live_.size(); ++i) std::swap(*live_[i], s.tensors[i]);
    for (size_t i = 0; i < live_scales_.size(); ++i) std::swap(*live_scales_[i], s.scales[i]);
  }
  held_ = slot;
}

Gpt::Gpt(const GptParams& params, ComputeMode mode, size_t B, size_t T, const Fp8Options& fp8,
         bool with_grads)
    : Gpt(params.config(), mode, B, T, fp8, with_grads) {
  set_weights(params.views());
}

Gpt::~Gpt() = default;

void Gpt::set_weights(std::vector<ScaledView> weights) {
  FP8LM_CHECK(weights.size() == specs_.size(), "set_weights: ", weights.size(),
              " tensors for a model of ", specs_.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const ScaledView& w = weights[i];
    const DType t = w.data.dtype;
    const bool linear_fp8 = specs_[i].linear_weight && mode_ == ComputeMode::kFP8;
    const bool per_tensor = w.mode == ScalingMode::kNone || w.mode == ScalingMode::kTensor;
    // E4M3 per tensor: an fp8 model's weights stored as FP8 (O3 replicas, an FP8 master).
    const bool fp8_ok = t == DType::kE4M3 && mode_ == ComputeMode::kFP8;
    FP8LM_CHECK(w.data.data != nullptr && w.numel() == specs_[i].numel() &&
                    (per_tensor || (linear_fp8 && t == DType::kE4M3)) &&
                    (t == DType::kF32 || t == DType::kF16 || t == DType::kBF16 || fp8_ok),
                "set_weights: ", specs_[i].name, " must be ", specs_[i].shape.str(),
                " f32, f16 or bf16 scaled per tensor (or e4m3 in an fp8 model), got ",
                w.data.shape.str(), " ", dtype_name(t), " ", scaling_mode_name(w.mode));
  }
  weights_ = std::move(weights);
}

void Gpt::set_token_weight_fn(TokenWeightFn fn, size_t group) {
  FP8LM_CHECK(fn == nullptr || (group > 0 && BT_ % group == 0), "set_token_weight_fn: groups of ",
              group, " rows do not tile the batch's ", BT_);
  weight_fn_ = std::move(fn);
  weight_group_ = group;
  token_weights_.assign(weight_fn_ != nullptr ? BT_ : 0, 0.0f);
}

void Gpt::set_adapters(std::vector<ScaledView> adapters) {
  FP8LM_CHECK(lora_.on() && adapters.size() == adapter_specs_.size(), "set_adapters: ",
              adapters.size(), " tensors for ", adapter_specs_.size(), " adapters");
  for (size_t i = 0; i < adapters.size(); ++i) {
    const DType t = adapters[i].data.dtype;
    FP8LM_CHECK(adapters[i].numel() == adapter_specs_[i].numel() &&
                    (t == DType::kF32 || (t == DType::kF16 && mode_ != ComputeMode::kF32)) &&
                    (adapters[i].mode == ScalingMode::kNone || adapters[i].mode == ScalingMode::kTensor),
                "set_adapters: ", adapter_specs_[i].name, " must be ", adapter_specs_[i].shape.str(),
                " f32 (or f16 scaled per tensor), got ", adapters[i].data.shape.str(), " ",
                dtype_name(t));
  }
  adapters_ = std::move(adapters);
}

namespace {

// FP32 view of a wide (f32 or bf16) activation, dequantized into scratch when needed.
const float* as_f32(const Tensor& t, float* scratch) {
  if (t.dtype() == DType::kF32) return t.as<float>();
  kernels::dequantize(scratch, t.data(), t.dtype(), t.numel(), 1.0f);
  return scratch;
}

// GELU of the first n values of a wide (f32 or bf16) pre-activation x into out; with dout,
// its gradient instead (out = dout · gelu'(x), out may alias dout). BF16 is read as stored.
void gelu_of(float* out, const Tensor& x, const float* dout, size_t n) {
  if (x.dtype() == DType::kF32) {
    if (dout) kernels::gelu_backward(out, x.as<float>(), dout, n);
    else kernels::gelu_forward(out, x.as<float>(), n);
  } else {
    FP8LM_CHECK(x.dtype() == DType::kBF16, "gelu: a ", dtype_name(x.dtype()), " pre-activation");
    if (dout) kernels::gelu_backward_bf16(out, x.as<uint16_t>(), dout, n);
    else kernels::gelu_forward_bf16(out, x.as<uint16_t>(), n);
  }
}

}  // namespace

void Gpt::embed(const int32_t* tokens) {
  const size_t C = static_cast<size_t>(cfg_.n_embd);
  if (!first()) {  // the previous stage's output
    pp_->recv_forward(blocks_[0]->resid_in.as<float>(), Rl_ * C);
    return;
  }
  const ScaledView& wte = weights_[wte_];
  const size_t es = dtype_size(wte.data.dtype);
  const float wte_s = wte.tensor_scale();
  const float* wpe = small(wpe_);
  // Every row's embedding (this rank's vocabulary part), then this rank's rows of the sum.
  float* x = sp_ ? ws_a_.as<float>() : blocks_[0]->resid_in.as<float>();
  for (size_t i = 0; i < BT_; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
      fail("token ", tokens[i], " at position ", i, " is outside the vocabulary (", cfg_.vocab_size,
           ")");
  // Each rank holds the rows [v0_, v0_ + Vpl_) of wte: the others' tokens are zero here and
  // the sum over the group leaves every row exactly as one process reads it.
  for (size_t i = 0; i < BT_; ++i) {
    const size_t t = static_cast<size_t>(tokens[i]);
    if (t < v0_ || t >= v0_ + Vpl_) {
      std::fill(x + i * C, x + (i + 1) * C, 0.0f);
      continue;
    }
    const auto* row = static_cast<const uint8_t*>(wte.data.data) + (t - v0_) * C * es;
    kernels::dequantize(x + i * C, row, wte.data.dtype, C, wte_s);
  }
  if (sp_) {
    tp_->reduce_scatter(x, blocks_[0]->resid_in.as<float>(), Rl_ * C, DType::kF32);
    x = blocks_[0]->resid_in.as<float>();
  } else {
    tp_sum(x, BT_ * C);
  }
  for (size_t i = 0; i < Rl_; ++i) {
    const float* pe = wpe + ((r0_ + i) % T_) * C;
    for (size_t c = 0; c < C; ++c) x[i * C + c] += pe[c];
  }
}

float* Gpt::exit_tp(float* y, const float* bias, float* out) {
  if (tp_ == nullptr) return y;  // the bias was added by the GEMM
  const size_t C = static_cast<size_t>(cfg_.n_embd);
  float* rows = y;
  if (sp_) {
    tp_->reduce_scatter(y, out, Rl_ * C, wire_);
    rows = out;
  } else {
    tp_->allreduce_sum(y, BT_ * C);
  }
  for (size_t i = 0; i < Rl_; ++i)
    for (size_t c = 0; c < C; ++c) rows[i * C + c] += bias[c];
  return rows;
}

void Gpt::gather_rows(float* full, DType format, void* scratch) {
  const size_t C = static_cast<size_t>(cfg_.n_embd), n = Rl_ * C;
  if (format == DType::kF32) {
    tp_->allgather_parts(full, n * sizeof(float), DType::kF32);
    return;
  }
  auto* staged = static_cast<uint16_t*>(scratch);  // this rank's rows too: every rank alike
  kernels::quantize(staged + r0_ * C, DType::kBF16, full + r0_ * C, n, 1.0f, /*saturate=*/false);
  tp_->allgather_parts(staged, n * sizeof(uint16_t), DType::kBF16);
  kernels::dequantize(full, staged, DType::kBF16, BT_ * C, 1.0f);
}

void Gpt::enter_tp(Linear& lin, float* full, void* scratch) {
  if (!sp_) {
    lin.commit_input(full);
    return;
  }
  const size_t C = static_cast<size_t>(cfg_.n_embd);
  if (lin.gathers_fp8_rows() && !gather_bf16_) {  // cast, then gather the narrow payload
    lin.commit_input_rows(full + r0_ * C, r0_, Rl_, [this](void* base, size_t bytes, DType f) {
      tp_->allgather_parts(base, bytes, f);
    });
    return;
  }
  // Fine recipes (tiles along rows span ranks) and the BF16 baseline: gather the values.
  gather_rows(full, gather_bf16_ ? DType::kBF16 : DType::kF32, scratch);
  lin.commit_input(full);
}

const float* Gpt::full_rows(const float* rows) {
  if (!sp_) return rows;
  const size_t C = static_cast<size_t>(cfg_.n_embd);
  float* full = ws_full_.as<float>();
  std::memcpy(full + r0_ * C, rows, Rl_ * C * sizeof(float));
  gather_rows(full, wire_, ws_qkv_.data());
  return full;
}

void Gpt::back_row_parallel(Linear& lin, float* dx, const float* dres, ScaledTensor& dw,
                            float* dbias, bool acc) {
  if (!fp8_grad_rows_) {
    lin.backward(dx, full_rows(dres), dw, dbias, acc);
    return;
  }
  const Linear::GradRows rows{r0_, Rl_, [this](void* base, size_t bytes, DType f) {
                                tp_->allgather_parts(base, bytes, f);
                              }};
  lin.backward(dx, dres, dw, dbias, acc, &rows);
}

const float* Gpt::enter_sp(float* partial, float* out) {
  if (!sp_) {
    tp_sum(partial, BT_ * static_cast<size_t>(cfg_.n_embd));
    return partial;
  }
  tp_->reduce_scatter(partial, out, Rl_ * static_cast<size_t>(cfg_.n_embd), wire_);
  return out;
}

void Gpt::forward_blocks() {
  const size_t C = static_cast<size_t>(cfg_.n_embd);
  const DType wide = mode_ == ComputeMode::kF32 ? DType::kF32 : DType::kBF16;
  float* a = ws_a_.as<float>();
  float* b = ws_b_.as<float>();
  for (size_t l = 0; l < blocks_.size(); ++l) {
    Block& k = *blocks_[l];
    const BlockSpecs& s = block_specs_[l];
    k.attn.prepare_weight(weights_[s.attn_w]);
    k.proj.prepare_weight(weights_[s.proj_w]);
    k.fc.prepare_weight(weights_[s.fc_w]);
    k.fcproj.prepare_weight(weights_[s.fcproj_w]);

    // ln_1 of this rank's rows, in their place of c_attn's whole input.
    float* ln1 = k.attn.input_buffer(a);
    kernels::layernorm_forward(ln1 + r0_ * C, k.ln1_mean.as<float>(), k.ln1_rstd.as<float>(),
                               k.resid_in.as<float>(), small(s.ln1_w), small(s.ln1_b), Rl_, C);
    enter_tp(k.attn, ln1, b);
    k.attn.forward(k.qkv.data(), wide, small(s.attn_b));

    const float* qkv = as_f32(k.qkv, ws_qkv_.as<float>());
    float* att = k.proj.input_buffer(a);
    kernels::attention_forward(att, k.lse.as<float>(), qkv, B_, T_, Cl_, NHl_);
    if (mode_ == ComputeMode::kFP8)
      kernels::quantize(k.att16.data(), DType::kBF16, att, BT_ * Cl_, 1.0f, false);
    k.proj.commit_input(att);
    k.proj.forward(b, DType::kF32, tp_ ? nullptr : small(s.proj_b));
    const float* y = exit_tp(b, small(s.proj_b), a);
    kernels::add(k.resid_mid.as<float>(), k.resid_in.as<float>(), y, Rl_ * C);

    float* ln2 = k.fc.input_buffer(a);
    kernels::layernorm_forward(ln2 + r0_ * C, k.ln2_mean.as<float>(), k.ln2_rstd.as<float>(),
                               k.resid_mid.as<float>(), small(s.ln2_w), small(s.ln2_b), Rl_, C);
    enter_tp(k.fc, ln2, b);
    k.fc.forward(k.fch.data(), wide, small(s.fc_b));

    float* g = k.fcproj.input_buffer(a);
    gelu_of(g, k.fch, nullptr, BT_ * 4 * Cl_);
    k.fcproj.commit_input(g);
    k.fcproj.forward(b, DType::kF32, tp_ ? nullptr : small(s.fcproj_b));
    const float* y2 = exit_tp(b, small(s.fcproj_b), a);
    // The next block's input (passed along: this block's own resid_in, read already).
    float* next = l + 1 == blocks_.size() ? resid_final_.as<float>()
                  : pass_along_           ? k.resid_in.as<float>()
                                          : blocks_[l + 1]->resid_in.as<float>();
    kernels::add(next, k.resid_mid.as<float>(), y2, Rl_ * C);
    if (pass_along_ && l + 1 < blocks_.size()) hand_over(l + 1);
  }
  if (!last()) {
    pp_->send_forward(resid_final_.as<float>(), Rl_ * C);
    return;
  }
  kernels::layernorm_forward(lnf_.as<float>() + r0_ * C, lnf_mean_.as<float>(),
                             lnf_rstd_.as<float>(), resid_final_.as<float>(), small(lnf_w_),
                             small(lnf_b_), Rl_, C);
  if (sp_) gather_rows(lnf_.as<float>(), DType::kF32, nullptr);  // the LM head reads all rows
}

void Gpt::parallel_cross_entropy(float* logits, float* losses, const int32_t* targets, size_t rows,
                                 float grad_scale, const float* row_scale,
                                 ExponentRange* grad_exps) {
  if (tp_ == nullptr && row_scale == nullptr) {
    kernels::softmax_cross_entropy(logits, losses, targets, rows,
                                   static_cast<size_t>(cfg_.vocab_size), Vpl_, grad_scale,
                                   grad_exps);
    return;
  }
  std::vector<float> norm;
  chunk_losses(logits, losses, targets, rows, norm);
  if (grad_scale != 0.0f)
    chunk_grads(logits, targets, rows, norm, grad_scale, row_scale, grad_exps);
}

void Gpt::chunk_losses(float* logits, float* losses, const int32_t* targets, size_t rows,
                       std::vector<float>& norm) {
  // Per row: the target's logit (from the rank holding it), max m and Σexp(x − m) over this
  // rank's columns (which keep exp(x − m)), then over the group M = max m and
  // S = Σ Σexp · exp(m − M): loss = M + log S − x_target, softmax = exp(x − m) · norm.
  std::vector<float> m(rows), s(rows), xt(rows, 0.0f);
  for (size_t r = 0; r < rows; ++r) {
    const int32_t t = targets[r];
    if (t >= 0 && static_cast<size_t>(t) >= v0_ && static_cast<size_t>(t) < v0_ + Vl_)
      xt[r] = logits[r * Vpl_ + (static_cast<size_t>(t) - v0_)];
  }
  kernels::logit_row_exps(logits, rows, Vl_, Vpl_, m.data(), s.data());
  std::vector<float> M = m;
  if (tp_ != nullptr) tp_->allreduce_max(M.data(), rows);
  std::vector<float> shift(rows);  // exp(m − M): this rank's Σexp in the group's terms
  for (size_t r = 0; r < rows; ++r) {
    shift[r] = s[r] == 0.0f ? 0.0f : std::exp(m[r] - M[r]);
    s[r] *= shift[r];
  }
  tp_sum(s.data(), rows);
  tp_sum(xt.data(), rows);
  norm.resize(rows);
  for (size_t r = 0; r < rows; ++r) {
    losses[r] = targets[r] < 0 ? 0.0f : M[r] + std::log(s[r]) - xt[r];
    norm[r] = shift[r] / s[r];
  }
}

void Gpt::chunk_grads(float* logits, const int32_t* targets, size_t rows,
                      const std::vector<float>& norm, float grad_scale, const float* row_scale,
                      ExponentRange* grad_exps) {
  std::vector<float> g(rows), mul(rows);
  for (size_t r = 0; r < rows; ++r) {
    g[r] = targets[r] < 0 ? 0.0f : row_scale != nullptr ? row_scale[r] : grad_scale;
    mul[r] = g[r] * norm[r];
  }
  kernels::scale_rows(logits, rows, Vl_, Vpl_, mul.data(), grad_exps);
  uint32_t fixed = kNoExponentBounds;  // the targets' entries (their old values stay counted)
  for (size_t r = 0; r < rows; ++r) {
    const size_t t = static_cast<size_t>(targets[r]);
    if (g[r] == 0.0f || t < v0_ || t >= v0_ + Vl_) continue;
    float& x = logits[r * Vpl_ + (t - v0_)];
    x -= g[r];
    fixed = add_exponent_bounds(fixed, x);
  }
  if (grad_exps != nullptr) *grad_exps = merged(*grad_exps, exponent_range_of_bounds(fixed));
}

void Gpt::set_lm_head(DType operands) {
  FP8LM_CHECK(operands == DType::kF32 || operands == DType::kBF16,
              "LM head operands must be f32 or bf16, got ", dtype_name(operands));
  lm_head_bf16_ = operands == DType::kBF16;
}

float Gpt::head(const int32_t* targets, bool grads, float* logits_out, const size_t* rows_at,
                size_t n_at) {
  const size_t C = static_cast<size_t>(cfg_.n_embd), V = static_cast<size_t>(cfg_.vocab_size);
  const size_t Vp = Vpl_;  // this rank's rows of wte (all of them without TP)
  kernels::GemmOperand wte = kernels::gemm_operand(weights_[wte_]);
  // BF16 operands: each product's A and B cast while packed, with their exponent ranges so
  // the products may run on the dot kernel (wte's once per call, lnf's over all its rows,
  // the logits' gradient per chunk by the kernels that write it; measured only where that
  // kernel exists).
  const bool measure = lm_head_bf16_ && kernels::gemm_has_bf16_dot();
  auto range = [&](const void* x, DType t, size_t rows, size_t cols) {
    const bool stored = t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
    return measure && stored ? kernels::exponent_range(x, t, rows, cols) : ExponentRange{};
  };
  auto bf16 = [&](kernels::GemmOperand o, const ExponentRange& e) {
    if (!lm_head_bf16_) return o;
    if (o.dtype != DType::kBF16) o.cast_to = DType::kBF16;
    o.exps = e;
    return o;
  };
  wte = bf16(wte, range(wte.data, wte.dtype, Vp, C));
  kernels::GemmOperand wte_t = wte;
  wte_t.transposed = true;
  float* dwte = grads && !lora_.on() ? grad_buf(wte_) : nullptr;  // wte frozen with LoRA
  float* dlnf = ws_a_.as<float>();
  float* all_losses = ws_losses_.as<float>();
  double loss = 0;
  // The LM head's rows: all of lnf; the chosen ones (logits_at); or, with targets, those that
  // have one — a row without a target (a prompt, padding) adds nothing to the loss or its
  // gradient, so fine-tuning's prompt rows never meet wte (pre-training: every row). Chosen
  // or kept rows are gathered (kept ones into ws_b_, free until backward).
  const float* lnf = lnf_.as<float>();
  auto gather = [&](const size_t* rows, size_t n, float* to) {
    for (size_t i = 0; i < n; ++i) std::memcpy(to + i * C, lnf + rows[i] * C, C * sizeof(float));
    lnf = to;
  };
  std::vector<size_t> keep;  // kept rows, ascending (compact row i is row keep[i])
  std::vector<int32_t> kept_targets;
  const int32_t* t = targets;
  size_t total = BT_;
  if (rows_at != nullptr) {
    FP8LM_CHECK(logits_out != nullptr && !grads, "head: chosen rows are for logits only");
    gather(rows_at, n_at, ws_a_.as<float>());  // dlnf's buffer, unused without gradients
    total = n_at;
  } else if (targets != nullptr) {
    for (size_t r = 0; r < BT_; ++r)
      if (targets[r] >= 0) keep.push_back(r);
  }
  const bool compact = keep.size() < total && rows_at == nullptr && targets != nullptr;
  if (compact) {
    gather(keep.data(), keep.size(), ws_b_.as<float>());
    for (const size_t r : keep) kept_targets.push_back(targets[r]);
    t = kept_targets.data();
    total = keep.size();
    std::fill(all_losses, all_losses + BT_, 0.0f);
  }
  std::vector<int32_t> no_targets;
  if (t == nullptr) {
    no_targets.assign(total, 0);
    t = no_targets.data();
  }
  auto row_of = [&](size_t i) { return compact ? keep[i] : i; };  // compact → batch row
  // Losses land in the batch's layout: in place, or compact then scattered.
  std::vector<float> kept_losses(compact ? total : 0);
  float* losses_at = compact ? kept_losses.data() : all_losses;
  auto scatter_losses = [&](size_t c0, size_t c1) {
    if (compact)
      for (size_t i = c0; i < c1; ++i) all_losses[keep[i]] = kept_losses[i];
  };

  // Weights decided from this forward's losses (set_token_weight_fn): chunks of whole groups
  // (of the batch's rows), each chunk's losses made before its gradient; when a group's rows
  // outgrow a chunk, every row's loss is made first by a loss-only pass (whose logits are
  // made again below). The calls hand over every batch row once, in order.
  const bool decide = grads && weight_fn_ != nullptr;
  const size_t G = weight_group_;
  std::vector<size_t> cuts = {0};  // compact row where each chunk starts, then total
  bool loss_pass = false;
  if (decide) {
    for (size_t i = 0, start = 0; i < total;) {
      size_t j = i;
      while (j < total && row_of(j) / G == row_of(i) / G) ++j;  // [i, j): one group's rows
      if (j - i > chunk_rows_) loss_pass = true;
      if (j - start > chunk_rows_ && i > start) cuts.push_back(start = i);
      i = j;
    }
  }
  if (!decide || loss_pass) {
    cuts = {0};
    for (size_t r0 = chunk_rows_; r0 < total; r0 += chunk_rows_) cuts.push_back(r0);
  }
  cuts.push_back(total);
  float* w = decide ? token_weights_.data() : nullptr;
  std::vector<float> kept_w;
  size_t handed = 0;  // batch rows handed to weight_fn_ so far
  auto hand_rows = [&](size_t end) {
    if (end > handed) weight_fn_(handed, end - handed, all_losses, w);
    handed = std::max(handed, end);
  };
  float* logits = ws_logits_.as<float>();
  std::vector<float> norm;
  const ExponentRange lnf_exps = range(lnf, DType::kF32, total, C);
  auto rows_of = [&](const float* x) { return bf16({x, DType::kF32}, lnf_exps); };
  if (loss_pass) {
    for (size_t c = 0; c + 1 < cuts.size(); ++c) {
      const size_t r0 = cuts[c], rows = cuts[c + 1] - r0;
      kernels::gemm(rows, Vp, C, 1.0f, rows_of(lnf + r0 * C), wte_t, 0.0f,
                    {logits, DType::kF32});
      chunk_losses(logits, losses_at + r0, t + r0, rows, norm);
    }
    scatter_losses(0, total);
    hand_rows(BT_);
  }
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    const size_t r0 = cuts[c], rows = cuts[c + 1] - r0;
    if (rows == 0) continue;  // a batch without targets
    const float* x = lnf + r0 * C;
    kernels::gemm(rows, Vp, C, 1.0f, rows_of(x), wte_t, 0.0f, {logits, DType::kF32});
    if (logits_out != nullptr) {
      const float* all = logits;  // [rank][rows][Vp]: every rank's columns of the chunk
      if (tp_ != nullptr) {
        if (ws_gather_.data() == nullptr)
          ws_gather_ = Tensor(DType::kF32, {i64(chunk_rows_ * Vp), shard_.size},
                              MemCategory::kWorkspace);
        tp_->allgather(logits, ws_gather_.as<float>(), rows * Vp);
        all = ws_gather_.as<float>();
      }
      for (size_t r = 0; r < rows; ++r)
        for (size_t q = 0; q < static_cast<size_t>(shard_.size); ++q) {
          const size_t v = q * Vp;  // first vocabulary row of rank q
          if (v >= V) break;
          std::memcpy(logits_out + (r0 + r) * V + v, all + (q * rows + r) * Vp,
                      std::min(Vp, V - v) * sizeof(float));
        }
      continue;
    }
    float* losses = losses_at + r0;
    ExponentRange dlogits_exps;  // measured by the cross-entropy kernels as they write
    ExponentRange* measured = measure ? &dlogits_exps : nullptr;
    if (decide) {
      chunk_losses(logits, losses, t + r0, rows, norm);
      if (!loss_pass) {
        scatter_losses(r0, r0 + rows);
        hand_rows((row_of(r0 + rows - 1) / G + 1) * G);
      }
      kept_w.resize(rows);
      for (size_t r = 0; r < rows; ++r) kept_w[r] = w[row_of(r0 + r)];
      chunk_grads(logits, t + r0, rows, norm, 0.0f, kept_w.data(), measured);
      for (size_t r = 0; r < rows; ++r) loss += losses[r] * kept_w[r];
    } else {
      const float grad_scale =
          !grads ? 0.0f : loss_weight_ > 0 ? loss_weight_ : 1.0f / static_cast<float>(BT_);
      parallel_cross_entropy(logits, losses, t + r0, rows, grad_scale, nullptr, measured);
      for (size_t r = 0; r < rows; ++r) loss += losses[r];
    }
    if (!grads) continue;
    // dlnf rows = dlogits · wte;  dwte += dlogitsᵀ · lnf rows
    kernels::GemmOperand dlogits = bf16({logits, DType::kF32}, dlogits_exps);
    kernels::gemm(rows, C, Vp, 1.0f, dlogits, wte, 0.0f, {dlnf + r0 * C, DType::kF32});
    dlogits.transposed = true;
    if (dwte != nullptr)
      kernels::gemm(Vp, C, rows, 1.0f, dlogits, rows_of(x), 1.0f, {dwte, DType::kF32});
  }
  if (decide) hand_rows(BT_);  // groups after the last kept row (or a batch with no targets)
  if (compact && !decide) scatter_losses(0, total);
  if (grads && compact) {  // the kept rows' dlnf to their rows (descending: in place), 0 elsewhere
    size_t above = BT_;    // rows from here on are done
    for (size_t i = total; i-- > 0;) {
      const size_t r = keep[i];
      std::memset(dlnf + (r + 1) * C, 0, (above - r - 1) * C * sizeof(float));
      std::memmove(dlnf + r * C, dlnf + i * C, C * sizeof(float));
      above = r;
    }
    std::memset(dlnf, 0, above * C * sizeof(float));
  }
  // Each rank's vocabulary rows contributed a part of every row's dlnf.
  if (grads && sp_) {
    float* rows = ws_b_.as<float>();
    tp_->reduce_scatter(dlnf, rows, Rl_ * C, DType::kF32);
    std::memcpy(dlnf, rows, Rl_ * C * sizeof(float));
  } else if (grads) {
    tp_sum(dlnf, BT_ * C);
  }
  if (decide) return static_cast<float>(loss);
  return static_cast<float>(loss_weight_ > 0 ? loss * static_cast<double>(loss_weight_)
                                             : loss / static_cast<double>(BT_));
}

void Gpt::backward(const int32_t* tokens, bool acc) {
  const size_t C = static_cast<size_t>(cfg_.n_embd);
  float* a = ws_a_.as<float>();
  float* b = ws_b_.as<float>();
  float* dres = ws_dres_.as<float>();  // this rank's rows of the residual gradient
  float* rows = b + BT_ * C;           // reduce-scatter results (b holds their input)

  // Sequence parallelism: the LayerNorm gradients are sums over every rank's rows; an
  // accumulated gradient (equal on every rank) is counted once, on rank 0.
  if (sp_ && acc && shard_.rank != 0)
    for (size_t i : sp_sum_specs_) std::memset(grad_buf(i), 0, specs_[i].numel() * sizeof(float));
  if (last()) {  // from dlnf, which the LM head left in a
    std::memset(dres, 0, Rl_ * C * sizeof(float));
    kernels::layernorm_backward(dres, grad_buf(lnf_w_), grad_buf(lnf_b_), a,
                                resid_final_.as<float>(), lnf_mean_.as<float>(),
                                lnf_rstd_.as<float>(), small(lnf_w_), Rl_, C);
  } else {  // the next stage's gradient of this stage's output
    pp_->recv_backward(dres, Rl_ * C);
  }
  for (size_t l = blocks_.size(); l-- > 0;) {
    Block& k = *blocks_[l];
    const BlockSpecs& s = block_specs_[l];

    back_row_parallel(k.fcproj, a, dres, k.g_fcproj, grad_buf(s.fcproj_b), acc);  // d GELU out
    gelu_of(a, k.fch, a, BT_ * 4 * Cl_);  // d GELU in, in place
    k.fc.backward(b, a, k.g_fc, grad_buf(s.fc_b), acc);  // d ln_2 out (partial with TP)
    kernels::layernorm_backward(dres, grad_buf(s.ln2_w), grad_buf(s.ln2_b), enter_sp(b, rows),
                                k.resid_mid.as<float>(), k.ln2_mean.as<float>(),
                                k.ln2_rstd.as<float>(), small(s.ln2_w), Rl_, C);

    back_row_parallel(k.proj, a, dres, k.g_proj, grad_buf(s.proj_b), acc);  // d attention out
    const float* qkv = as_f32(k.qkv, ws_qkv_.as<float>());
    // The attention output as FP32: the fp32 c_proj input itself, else a bf16 copy.
    const float* att;
    if (mode_ == ComputeMode::kFP8) {
      kernels::dequantize(b, k.att16.data(), DType::kBF16, BT_ * Cl_, 1.0f);
      att = b;
    } else {
      att = k.proj.saved_input_f32(b);
    }
    float* dqkv = b + BT_ * Cl_;
    kernels::attention_backward(dqkv, a, qkv, att, k.lse.as<float>(), B_, T_, Cl_, NHl_);
    k.attn.backward(a, dqkv, k.g_attn, grad_buf(s.attn_b), acc);  // d ln_1 out (partial)
    kernels::layernorm_backward(dres, grad_buf(s.ln1_w), grad_buf(s.ln1_b), enter_sp(a, rows),
                                k.resid_in.as<float>(), k.ln1_mean.as<float>(),
                                k.ln1_rstd.as<float>(), small(s.ln1_w), Rl_, C);
  }
  // The embeddings' gradients from every row (this rank's vocabulary part of wte), or the
  // gradient of this stage's input to the previous stage.
  const float* d = first() && !lora_.on() ? full_rows(dres) : nullptr;  // frozen embeddings
  if (!first()) pp_->send_backward(dres, Rl_ * C);
  float* dwte = d != nullptr ? grad_buf(wte_) : nullptr;
  float* dwpe = d != nullptr ? grad_buf(wpe_) : nullptr;
  for (size_t i = 0; d != nullptr && i < BT_; ++i) {
    const size_t t = static_cast<size_t>(tokens[i]);
    float* pe = dwpe + (i % T_) * C;
    for (size_t c = 0; c < C; ++c) pe[c] += d[i * C + c];
    if (t < v0_ || t >= v0_ + Vpl_) continue;  // another rank's row of wte
    float* te = dwte + (t - v0_) * C;
    for (size_t c = 0; c < C; ++c) te[c] += d[i * C + c];
  }
  if (sp_) {  // the LayerNorm gradients summed over the ranks' rows, in one call
    std::vector<float> packed;
    for (size_t i : sp_sum_specs_) packed.insert(packed.end(), grad_buf(i), grad_buf(i) + specs_[i].numel());
    tp_->allreduce_sum(packed.data(), packed.size());
    size_t off = 0;
    for (size_t i : sp_sum_specs_) {
      std::memcpy(grad_buf(i), packed.data() + off, specs_[i].numel() * sizeof(float));
      off += specs_[i].numel();
    }
  }
  // fp8: the non-Linear gradients are stored as E4M3 with just-in-time scales.
  const bool probing = probe_ != nullptr && probe_->wants();
  for (size_t i = 0; i < grad8_.size(); ++i) {
    if (grad8_[i].data.data() == nullptr) continue;
    quantize(grad8_[i], grad_buf(i));
    if (probing) probe_->record(specs_[i].name, "grad", grad_buf(i), grad8_[i].view());
  }
}

float Gpt::run_forward(const int32_t* tokens, const int32_t* targets, bool grads, float* logits,
                       const size_t* rows, size_t n) {
  FP8LM_CHECK(!weights_.empty(), "Gpt: set_weights() was not called");
  FP8LM_CHECK(!lora_.on() || !adapters_.empty(), "Gpt: set_adapters() was not called");
  for (size_t p = 0; p < adapter_layer_.size(); ++p)
    adapter_layer_[p]->prepare_adapter(adapters_[2 * p], adapters_[2 * p + 1]);
  for (size_t i = 0; i < specs_.size(); ++i)
    if (!specs_[i].linear_weight && i != wte_)
      kernels::dequantize(small_.as<float>() + small_off_[i], weights_[i]);
  // Without gradients this is evaluation: the delayed-scaling state is put back after.
  std::vector<ScalingMeta> saved;
  if (!grads)
    for (ScalingMeta* m : scaling_metas()) saved.push_back(*m);
  if (pass_along_) hand_over(0);  // the first block's input is written first
  embed(tokens);
  forward_blocks();
  const float loss = last() ? head(targets, grads, logits, rows, n) : 0.0f;
  if (!grads) {
    const std::vector<ScalingMeta*> metas = scaling_metas();
    for (size_t i = 0; i < metas.size(); ++i) *metas[i] = saved[i];
  }
  return loss;
}

float Gpt::forward(const int32_t* tokens, const int32_t* targets) {
  select_slot(0);
  const float loss = run_forward(tokens, targets, false, nullptr);
  return pp_ != nullptr ? static_cast<float>(pp_->share_loss(loss)) : loss;
}

void Gpt::begin_grads(bool accumulate) {
  if (!accumulate) {
    std::memset(grads_.data(), 0, grads_.bytes());
    return;
  }
  for (size_t i = 0; i < grad8_.size(); ++i)
    if (grad8_[i].data.data() != nullptr) dequantize(grad_buf(i), grad8_[i]);
}

float Gpt::stage_forward(const int32_t* tokens, const int32_t* targets, size_t slot, bool grads,
                         bool accumulate) {
  FP8LM_CHECK(with_grads_ || !grads, "gradients from a model built without them");
  select_slot(slot);
  // The LM head adds to wte's gradient while it runs: the gradients start here on the last
  // stage (and in backward on the others).
  if (grads && last()) begin_grads(accumulate);
  return run_forward(tokens, targets, grads, nullptr);
}

void Gpt::stage_backward(const int32_t* tokens, size_t slot, bool accumulate) {
  FP8LM_CHECK(with_grads_, "backward on a model built without gradients");
  select_slot(slot);
  if (!last()) begin_grads(accumulate);
  backward(tokens, accumulate);
}

float Gpt::forward_backward(const int32_t* tokens, const int32_t* targets, bool accumulate) {
  const float loss = stage_forward(tokens, targets, 0, true, accumulate);
  stage_backward(tokens, 0, accumulate);
  return pp_ != nullptr ? static_cast<float>(pp_->share_loss(loss)) : loss;
}

void Gpt::sum_tied_grads() {
  if (pp_ == nullptr || wte_ == npos) return;
  // The FP32 gradient is still in its staging after the last backward (fp8 stores it as E4M3
  // too: the sum is stored again, from the exact sum).
  float* g = grad_buf(wte_);
  pp_->tied_sum(g, specs_[wte_].numel());
  if (grad8_[wte_].data.data() != nullptr) quantize(grad8_[wte_], g);
}

void Gpt::logits(const int32_t* tokens, float* out) {
  FP8LM_CHECK(pp_ == nullptr, "logits: a pipeline-parallel model has no whole LM head here");
  select_slot(0);
  run_forward(tokens, nullptr, false, out);
}

void Gpt::logits_at(const int32_t* tokens, const size_t* rows, size_t n, float* out) {
  FP8LM_CHECK(pp_ == nullptr, "logits: a pipeline-parallel model has no whole LM head here");
  FP8LM_CHECK(n <= BT_, "logits_at: ", n, " rows of ", BT_);
  for (size_t i = 0; i < n; ++i)
    FP8LM_CHECK(rows[i] < BT_, "logits_at: row ", rows[i], " of ", BT_);
  select_slot(0);
  run_forward(tokens, nullptr, false, out, rows, n);
}

MutableScaledView Gpt::grad_buffer(size_t i) {
  FP8LM_CHECK(i < trainable_specs().size(), "no trainable tensor ", i);
  FP8LM_CHECK(with_grads_, "a model built without gradients has none");
  if (lora_.on()) return adapter_layer_[i / 2]->adapter_grad(i % 2 == 1).mut_view();
  if (specs_[i].linear_weight) {
    ScaledTensor* found = nullptr;
    for (size_t l = 0; l < blocks_.size() && found == nullptr; ++l) {
      const BlockSpecs& s = block_specs_[l];
      Block& k = *blocks_[l];
      found = i == s.attn_w ? &k.g_attn : i == s.proj_w ? &k.g_proj : i == s.fc_w ? &k.g_fc
              : i == s.fcproj_w ? &k.g_fcproj : nullptr;
    }
    FP8LM_CHECK(found != nullptr, specs_[i].name, " is not a Linear weight of a block");
    return found->mut_view();
  }
  ScaledTensor& g8 = grad8_[i];
  if (g8.data.data() != nullptr) return g8.mut_view();
  return tensor_view(static_cast<void*>(grad_buf(i)), DType::kF32, specs_[i].shape, nullptr);
}

ScaledView Gpt::grad(size_t spec) const {
  return const_cast<Gpt*>(this)->grad_buffer(spec);  // read only here
}

std::vector<MutableScaledView> Gpt::grad_buffers() {
  std::vector<MutableScaledView> out;
  for (size_t i = 0; i < trainable_specs().size(); ++i) out.push_back(grad_buffer(i));
  return out;
}

void Gpt::set_probe(QuantProbe* probe) {
  probe_ = mode_ == ComputeMode::kFP8 ? probe : nullptr;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    Block& k = *blocks_[l];
    k.attn.set_probe(probe_, h + "attn.c_attn");
    k.proj.set_probe(probe_, h + "attn.c_proj");
    k.fc.set_probe(probe_, h + "mlp.c_fc");
    k.fcproj.set_probe(probe_, h + "mlp.c_proj");
  }
}

std::vector<ScalingMeta*> Gpt::scaling_metas() {
  std::vector<ScalingMeta*> out;
  for (auto& b : blocks_)
    for (Linear* l : {&b->attn, &b->proj, &b->fc, &b->fcproj})
      for (ScalingMeta* m : l->scaling_metas()) out.push_back(m);
  FP8LM_CHECK(out.size() == (mode_ == ComputeMode::kFP8 ? 8 * blocks_.size() : 0),
              "scaling_meta_count is stale");
  return out;
}

size_t Gpt::scaling_meta_count(const GptConfig& cfg, ComputeMode mode) {
  return mode == ComputeMode::kFP8 ? 8 * static_cast<size_t>(cfg.n_layer) : 0;
}

void Gpt::grad_values(size_t spec, float* out) const {
  kernels::dequantize(out, grad(spec));
}

}  // namespace fp8lm
