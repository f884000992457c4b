#include "model/gpt.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/memory.h"
#include "kernels/cast.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"

namespace fp8lm {
namespace {

int64_t i64(size_t v) { return static_cast<int64_t>(v); }
constexpr size_t kSpecsPerBlock = 12;
// Rows per LM-head chunk: each chunk packs all of wte twice (logits, dlnf), so chunks are
// large (≤ 128 MiB of logits) yet never the whole batch.
constexpr size_t kLogitChunkFloats = size_t{32} << 20;

}  // namespace

struct Gpt::Block {
  Linear attn, proj, fc, fcproj;
  WeightGrad g_attn, g_proj, g_fc, g_fcproj;
  Tensor resid_in, ln1_mean, ln1_rstd, qkv, lse, att16, resid_mid, ln2_mean, ln2_rstd, fch;

  Block(ComputeMode mode, size_t B, size_t T, size_t C, size_t NH, const Fp8Options& fp8)
      : attn(mode, C, 3 * C, B * T, fp8),
        proj(mode, C, C, B * T, fp8),
        fc(mode, C, 4 * C, B * T, fp8),
        fcproj(mode, 4 * C, C, B * T, fp8) {
    const int64_t BT = i64(B * T);
    const auto act = MemCategory::kActivations;
    const DType wide = mode == ComputeMode::kF32 ? DType::kF32 : DType::kBF16;
    resid_in = Tensor(DType::kF32, {BT, i64(C)}, act);
    ln1_mean = Tensor(DType::kF32, {BT}, act);
    ln1_rstd = Tensor(DType::kF32, {BT}, act);
    qkv = Tensor(wide, {BT, i64(3 * C)}, act);
    lse = Tensor(DType::kF32, {i64(B * NH * T)}, act);
    if (mode == ComputeMode::kFP8) att16 = Tensor(DType::kBF16, {BT, i64(C)}, act);
    resid_mid = Tensor(DType::kF32, {BT, i64(C)}, act);
    ln2_mean = Tensor(DType::kF32, {BT}, act);
    ln2_rstd = Tensor(DType::kF32, {BT}, act);
    fch = Tensor(wide, {BT, i64(4 * C)}, act);
    g_attn = attn.make_grad();
    g_proj = proj.make_grad();
    g_fc = fc.make_grad();
    g_fcproj = fcproj.make_grad();
  }
};

Gpt::Gpt(GptParams& params, ComputeMode mode, size_t B, size_t T, const Fp8Options& fp8)
    : params_(params), mode_(mode), B_(B), T_(T), BT_(B * T) {
  const GptConfig& cfg = config();
  if (B < 1 || T < 1 || T > static_cast<size_t>(cfg.seq_len))
    fail("batch shape ", B, "x", T, " does not fit the model (seq_len ", cfg.seq_len, ")");
  const size_t C = static_cast<size_t>(cfg.n_embd), NH = static_cast<size_t>(cfg.n_head);
  const size_t Vp = static_cast<size_t>(cfg.padded_vocab());
  const int64_t before = mem_stats(MemCategory::kActivations).current;
  for (int l = 0; l < cfg.n_layer; ++l)
    blocks_.push_back(std::make_unique<Block>(mode, B, T, C, NH, fp8));
  const auto act = MemCategory::kActivations;
  resid_final_ = Tensor(DType::kF32, {i64(BT_), i64(C)}, act);
  lnf_ = Tensor(DType::kF32, {i64(BT_), i64(C)}, act);
  lnf_mean_ = Tensor(DType::kF32, {i64(BT_)}, act);
  lnf_rstd_ = Tensor(DType::kF32, {i64(BT_)}, act);
  activation_bytes_ = static_cast<size_t>(mem_stats(MemCategory::kActivations).current - before);

  // Gradients of the non-Linear parameters, packed in layout order (Linear weight grads
  // live with their layers: FP32, or E4M3 in fp8 mode).
  size_t n = 0;
  for (const ParamSpec& s : params_.specs())
    if (!s.linear_weight) n += s.numel();
  grads_ = Tensor(DType::kF32, {i64(n)}, MemCategory::kGradients);
  std::memset(grads_.data(), 0, grads_.bytes());

  const auto ws = MemCategory::kWorkspace;
  ws_a_ = Tensor(DType::kF32, {i64(BT_), i64(4 * C)}, ws);
  ws_b_ = Tensor(DType::kF32, {i64(BT_), i64(4 * C)}, ws);
  ws_qkv_ = Tensor(DType::kF32, {i64(BT_), i64(3 * C)}, ws);
  ws_dres_ = Tensor(DType::kF32, {i64(BT_), i64(C)}, ws);
  chunk_rows_ = std::clamp<size_t>(kLogitChunkFloats / Vp, 1, std::max<size_t>(1, BT_ / 2));
  ws_logits_ = Tensor(DType::kF32, {i64(chunk_rows_), i64(Vp)}, ws);
  ws_losses_ = Tensor(DType::kF32, {i64(BT_)}, ws);
}

Gpt::~Gpt() = default;

namespace {

// Offset of spec i in the packed non-Linear gradient buffer.
size_t grad_offset(const std::vector<ParamSpec>& specs, size_t i) {
  size_t off = 0;
  for (size_t k = 0; k < i; ++k)
    if (!specs[k].linear_weight) off += specs[k].numel();
  return off;
}

// FP32 view of a wide (f32 or bf16) activation, dequantized into scratch when needed.
const float* as_f32(const Tensor& t, float* scratch) {
  if (t.dtype() == DType::kF32) return t.as<float>();
  kernels::dequantize(scratch, t.data(), t.dtype(), t.numel(), 1.0f);
  return scratch;
}

}  // namespace

void Gpt::embed(const int32_t* tokens) {
  const GptConfig& cfg = config();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  float* x = blocks_[0]->resid_in.as<float>();
  for (size_t i = 0; i < BT_; ++i) {
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size)
      fail("token ", tokens[i], " at position ", i, " is outside the vocabulary (", cfg.vocab_size,
           ")");
    const float* te = params_.wte() + static_cast<size_t>(tokens[i]) * C;
    const float* pe = params_.wpe() + (i % T_) * C;
    for (size_t c = 0; c < C; ++c) x[i * C + c] = te[c] + pe[c];
  }
}

void Gpt::forward_blocks() {
  const GptConfig& cfg = config();
  const size_t C = static_cast<size_t>(cfg.n_embd), NH = static_cast<size_t>(cfg.n_head);
  const DType wide = mode_ == ComputeMode::kF32 ? DType::kF32 : DType::kBF16;
  float* a = ws_a_.as<float>();
  float* b = ws_b_.as<float>();
  for (size_t l = 0; l < blocks_.size(); ++l) {
    Block& k = *blocks_[l];
    const BlockParams p = params_.block(static_cast<int>(l));
    k.attn.prepare_weight(p.attn_w);
    k.proj.prepare_weight(p.proj_w);
    k.fc.prepare_weight(p.fc_w);
    k.fcproj.prepare_weight(p.fcproj_w);

    float* ln1 = k.attn.input_buffer(a);
    kernels::layernorm_forward(ln1, k.ln1_mean.as<float>(), k.ln1_rstd.as<float>(),
                               k.resid_in.as<float>(), p.ln1_w, p.ln1_b, BT_, C);
    k.attn.commit_input(ln1);
    k.attn.forward(k.qkv.data(), wide, p.attn_b);

    const float* qkv = as_f32(k.qkv, ws_qkv_.as<float>());
    float* att = k.proj.input_buffer(a);
    kernels::attention_forward(att, k.lse.as<float>(), qkv, B_, T_, C, NH);
    if (mode_ == ComputeMode::kFP8)
      kernels::quantize(k.att16.data(), DType::kBF16, att, BT_ * C, 1.0f, false);
    k.proj.commit_input(att);
    k.proj.forward(b, DType::kF32, p.proj_b);
    kernels::add(k.resid_mid.as<float>(), k.resid_in.as<float>(), b, BT_ * C);

    float* ln2 = k.fc.input_buffer(a);
    kernels::layernorm_forward(ln2, k.ln2_mean.as<float>(), k.ln2_rstd.as<float>(),
                               k.resid_mid.as<float>(), p.ln2_w, p.ln2_b, BT_, C);
    k.fc.commit_input(ln2);
    k.fc.forward(k.fch.data(), wide, p.fc_b);

    const float* fch = as_f32(k.fch, b);
    float* g = k.fcproj.input_buffer(a);
    kernels::gelu_forward(g, fch, BT_ * 4 * C);
    k.fcproj.commit_input(g);
    k.fcproj.forward(b, DType::kF32, p.fcproj_b);
    float* next = l + 1 < blocks_.size() ? blocks_[l + 1]->resid_in.as<float>()
                                         : resid_final_.as<float>();
    kernels::add(next, k.resid_mid.as<float>(), b, BT_ * C);
  }
  kernels::layernorm_forward(lnf_.as<float>(), lnf_mean_.as<float>(), lnf_rstd_.as<float>(),
                             resid_final_.as<float>(), params_.lnf_w(), params_.lnf_b(), BT_, C);
}

float Gpt::head(const int32_t* targets, bool grads, bool accumulate, float* logits_out) {
  (void)accumulate;  // dwte accumulates: its buffer was zeroed by forward_backward if needed
  const GptConfig& cfg = config();
  const size_t C = static_cast<size_t>(cfg.n_embd), V = static_cast<size_t>(cfg.vocab_size);
  const size_t Vp = static_cast<size_t>(cfg.padded_vocab());
  float* dwte = grads_.as<float>();  // wte is the first parameter
  float* dlnf = ws_a_.as<float>();
  std::vector<int32_t> no_targets;
  if (targets == nullptr) no_targets.assign(BT_, 0);
  const int32_t* t = targets ? targets : no_targets.data();
  double loss = 0;
  for (size_t r0 = 0; r0 < BT_; r0 += chunk_rows_) {
    const size_t rows = std::min(chunk_rows_, BT_ - r0);
    float* logits = ws_logits_.as<float>();
    const float* x = lnf_.as<float>() + r0 * C;
    kernels::gemm(rows, Vp, C, 1.0f, {x, DType::kF32}, {params_.wte(), DType::kF32, true}, 0.0f,
                  {logits, DType::kF32});
    if (logits_out != nullptr) {
      for (size_t r = 0; r < rows; ++r)
        std::memcpy(logits_out + (r0 + r) * V, logits + r * Vp, V * sizeof(float));
      continue;
    }
    const float grad_scale = grads ? 1.0f / static_cast<float>(BT_) : 0.0f;
    float* losses = ws_losses_.as<float>() + r0;
    kernels::softmax_cross_entropy(logits, losses, t + r0, rows, V, Vp, grad_scale);
    for (size_t r = 0; r < rows; ++r) loss += losses[r];
    if (!grads) continue;
    // dlnf rows = dlogits · wte;  dwte += dlogitsᵀ · lnf rows
    kernels::gemm(rows, C, Vp, 1.0f, {logits, DType::kF32}, {params_.wte(), DType::kF32}, 0.0f,
                  {dlnf + r0 * C, DType::kF32});
    kernels::gemm(Vp, C, rows, 1.0f, {logits, DType::kF32, true}, {x, DType::kF32}, 1.0f,
                  {dwte, DType::kF32});
  }
  return static_cast<float>(loss / static_cast<double>(BT_));
}

void Gpt::backward(const int32_t* tokens, bool accumulate) {
  const GptConfig& cfg = config();
  const size_t C = static_cast<size_t>(cfg.n_embd), NH = static_cast<size_t>(cfg.n_head);
  const auto& specs = params_.specs();
  float* g = grads_.as<float>();
  auto grad_of = [&](size_t spec) { return g + grad_offset(specs, spec); };
  float* a = ws_a_.as<float>();
  float* b = ws_b_.as<float>();
  float* dres = ws_dres_.as<float>();

  std::memset(dres, 0, BT_ * C * sizeof(float));
  kernels::layernorm_backward(dres, grad_of(specs.size() - 2), grad_of(specs.size() - 1), a,
                              resid_final_.as<float>(), lnf_mean_.as<float>(),
                              lnf_rstd_.as<float>(), params_.lnf_w(), BT_, C);
  for (size_t l = blocks_.size(); l-- > 0;) {
    Block& k = *blocks_[l];
    const BlockParams p = params_.block(static_cast<int>(l));
    const size_t s0 = 2 + l * kSpecsPerBlock;  // ln_1.weight of this block

    k.fcproj.backward(a, dres, k.g_fcproj, grad_of(s0 + 11), accumulate);  // d GELU out
    const float* fch = as_f32(k.fch, b);
    kernels::gelu_backward(a, fch, a, BT_ * 4 * C);
    k.fc.backward(b, a, k.g_fc, grad_of(s0 + 9), accumulate);  // d ln_2 out
    kernels::layernorm_backward(dres, grad_of(s0 + 6), grad_of(s0 + 7), b,
                                k.resid_mid.as<float>(), k.ln2_mean.as<float>(),
                                k.ln2_rstd.as<float>(), p.ln2_w, BT_, C);

    k.proj.backward(a, dres, k.g_proj, grad_of(s0 + 5), accumulate);  // d attention out
    const float* qkv = as_f32(k.qkv, ws_qkv_.as<float>());
    // The attention output as FP32: the fp32 c_proj input itself, else a bf16 copy.
    const Tensor* att_saved = mode_ == ComputeMode::kFP8 ? &k.att16 : nullptr;
    const float* att;
    if (att_saved != nullptr) {
      kernels::dequantize(b, att_saved->data(), DType::kBF16, BT_ * C, 1.0f);
      att = b;
    } else {
      att = k.proj.saved_input_f32(b);
    }
    float* dqkv = b + BT_ * C;
    kernels::attention_backward(dqkv, a, qkv, att, k.lse.as<float>(), B_, T_, C, NH);
    k.attn.backward(a, dqkv, k.g_attn, grad_of(s0 + 3), accumulate);  // d ln_1 out
    kernels::layernorm_backward(dres, grad_of(s0), grad_of(s0 + 1), a, k.resid_in.as<float>(),
                                k.ln1_mean.as<float>(), k.ln1_rstd.as<float>(), p.ln1_w, BT_,
                                C);
  }
  float* dwte = grad_of(0);
  float* dwpe = grad_of(1);
  for (size_t i = 0; i < BT_; ++i) {
    float* te = dwte + static_cast<size_t>(tokens[i]) * C;
    float* pe = dwpe + (i % T_) * C;
    for (size_t c = 0; c < C; ++c) {
      te[c] += dres[i * C + c];
      pe[c] += dres[i * C + c];
    }
  }
}

float Gpt::forward(const int32_t* tokens, const int32_t* targets) {
  embed(tokens);
  forward_blocks();
  return head(targets, false, false, nullptr);
}

float Gpt::forward_backward(const int32_t* tokens, const int32_t* targets, bool accumulate) {
  if (!accumulate) std::memset(grads_.data(), 0, grads_.bytes());
  embed(tokens);
  forward_blocks();
  const float loss = head(targets, true, accumulate, nullptr);
  backward(tokens, accumulate);
  return loss;
}

void Gpt::logits(const int32_t* tokens, float* out) {
  embed(tokens);
  forward_blocks();
  head(nullptr, false, false, out);
}

Gpt::GradView Gpt::grad(size_t spec) const {
  const auto& specs = params_.specs();
  FP8LM_CHECK(spec < specs.size(), "no parameter ", spec);
  if (specs[spec].linear_weight) {
    const size_t l = (spec - 2) / kSpecsPerBlock, which = (spec - 2) % kSpecsPerBlock;
    const Block& k = *blocks_[l];
    const WeightGrad& g = which == 2 ? k.g_attn : which == 4 ? k.g_proj : which == 8 ? k.g_fc
                                                                                     : k.g_fcproj;
    if (g.is_fp8()) return {g.e4m3.data.data(), DType::kE4M3, g.e4m3.meta.scale_inv};
    return {g.f32.data(), DType::kF32, 1.0f};
  }
  return {grads_.as<float>() + grad_offset(specs, spec), DType::kF32, 1.0f};
}

std::vector<ScalingMeta*> Gpt::scaling_metas() {
  std::vector<ScalingMeta*> out;
  for (auto& b : blocks_)
    for (Linear* l : {&b->attn, &b->proj, &b->fc, &b->fcproj})
      for (ScalingMeta* m : l->scaling_metas()) out.push_back(m);
  return out;
}

void Gpt::grad_values(size_t spec, float* out) const {
  const GradView g = grad(spec);
  kernels::dequantize(out, g.data, g.dtype, params_.specs()[spec].numel(), g.scale_inv);
}

}  // namespace fp8lm
