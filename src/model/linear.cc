#include "model/linear.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "kernels/cast.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"

namespace fp8lm {
namespace {

ScalingRecipe scaling(DType format, ScalingTiming timing, const Fp8Options& o = {}) {
  ScalingRecipe r;
  r.format = format;
  r.timing = timing;
  r.window = o.window;
  r.margin = o.margin;
  return r;
}

int64_t i64(size_t v) { return static_cast<int64_t>(v); }

// Quantizes src [r, c] into workspace buffers with block scales; returns the view.
ScaledView quantize_into(void* q, void* scales, DType t, const float* src, size_t r, size_t c,
                         ScalingMode m, float* amax = nullptr) {
  const Shape shape{i64(r), i64(c)};
  const MutableScaledView v{
      {q, t, shape}, m, {scales, block_shape(m).scale_dtype, scale_grid_shape(shape, m)}};
  const float a = kernels::quantize_blocks(v, src);
  if (amax) *amax = a;
  return v;
}

}  // namespace

Fp8Options fp8_options(std::string_view recipe, int amax_window, int margin,
                       std::string_view mx_grad_format) {
  Fp8Options o;
  o.recipe = &recipe_plan(recipe);
  o.window = amax_window;
  o.margin = margin;
  o.dy = o.recipe->fine == FineScaling::kMx && mx_grad_format == "e5m2" ? DType::kE5M2
                                                                         : o.recipe->dy;
  return o;
}

size_t linear_grid_bytes(size_t r, size_t c) {
  // The largest grid is MX's (one scale per 32 elements, plus a partial block per row or
  // column); tiles of 128 with F32 scales need at most as many bytes.
  return 4 * ((r * c) / 32 + r + c + 1);
}

Linear::Linear(ComputeMode mode, size_t in, size_t out, size_t rows, const LinearWorkspace& ws,
               const Fp8Options& fp8, bool saves_input)
    : mode_(mode),
      in_(in),
      out_(out),
      rows_(rows),
      fp8_(fp8),
      w8_meta_(scaling(DType::kE4M3, ScalingTiming::kJustInTime)),
      ws_(ws),
      dy8_meta_(scaling(fp8.dy, fp8.recipe->timing, fp8)) {
  const Shape xs{i64(saves_input ? rows : 0), i64(in)};  // 0 rows: no storage
  switch (mode) {
    case ComputeMode::kF32:
      x_ = Tensor(DType::kF32, xs, MemCategory::kActivations);
      break;
    case ComputeMode::kBF16:
      x_ = Tensor(DType::kBF16, xs, MemCategory::kActivations);
      break;
    case ComputeMode::kFP8:
      if (fp8.recipe->fine == FineScaling::kNone) {
        x8_ = ScaledTensor(xs, scaling(DType::kE4M3, fp8.recipe->timing, fp8),
                           MemCategory::kActivations);
      } else {
        x8_ = ScaledTensor(xs, DType::kE4M3, fp8.recipe->x_fwd, MemCategory::kActivations);
        xt8_ = ScaledTensor(xs, DType::kE4M3, fp8.recipe->x_wgrad, MemCategory::kActivations);
        x8_.meta = ScalingMeta(scaling(DType::kE4M3, ScalingTiming::kJustInTime, fp8));
      }
      break;
  }
}

ScaledTensor Linear::make_grad() const { return make_grad(in_, out_); }

ScaledTensor Linear::make_grad(size_t in, size_t out) const {
  const DType t = mode_ == ComputeMode::kFP8 ? DType::kE4M3 : DType::kF32;
  ScaledTensor g(Shape{i64(in), i64(out)}, scaling(t, ScalingTiming::kJustInTime),
                 MemCategory::kGradients);
  std::memset(g.data.data(), 0, g.data.bytes());
  return g;
}

void Linear::set_probe(QuantProbe* probe, std::string name) {
  probe_ = mode_ == ComputeMode::kFP8 ? probe : nullptr;  // only FP8 casts are reported
  name_ = std::move(name);
}

void Linear::probe_weight() {
  if (w_.data.dtype == DType::kE4M3) return;  // an O3 replica: the master is elsewhere
  const Shape shape{i64(in_), i64(out_)};
  std::vector<float> values(in_ * out_);
  kernels::dequantize(values.data(), w_);
  if (fine()) {
    ScaledTensor q(shape, DType::kE4M3, fp8_.recipe->w_fwd, MemCategory::kWorkspace);
    quantize(q, values.data());
    probe_->record(name_, "W", values.data(), q.view());
    return;
  }
  // The GEMM casts the master on the fly: the same cast, materialised.
  Tensor q(DType::kE4M3, shape, MemCategory::kWorkspace);
  kernels::quantize(q.data(), DType::kE4M3, values.data(), values.size(), w8_meta_.scale);
  probe_->record(name_, "W", values.data(),
                 tensor_view(static_cast<const void*>(q.data()), DType::kE4M3, shape,
                             &w8_meta_.scale_inv));
}

void Linear::saved_state(std::vector<Tensor*>& tensors, std::vector<float*>& scales) {
  std::vector<Tensor*> all;
  input_tensors(all);
  all.push_back(&u_);
  for (Tensor* t : all)
    if (t->data() != nullptr) tensors.push_back(t);
  for (ScalingMeta* m : {&x8_.meta, &xt8_.meta, &u8_meta_})
    scales.insert(scales.end(), {&m->scale, &m->scale_inv});
}

void Linear::input_tensors(std::vector<Tensor*>& tensors) {
  tensors.insert(tensors.end(), {&x_, &x8_.data, &x8_.scales, &xt8_.data, &xt8_.scales});
}

std::vector<ScalingMeta*> Linear::scaling_metas() {
  if (mode_ != ComputeMode::kFP8) return {};
  return {&x8_.meta, &dy8_meta_};
}

void Linear::prepare_weight(const ScaledView& w) {
  const DType t = w.data.dtype;
  FP8LM_CHECK(w.numel() == in_ * out_, "a Linear of ", in_, "x", out_, " got a weight of ",
              w.data.shape.str());
  FP8LM_CHECK(mode_ != ComputeMode::kF32 || (t == DType::kF32 && w.tensor_scale() == 1.0f),
              "an fp32 Linear computes on an FP32 master, got ", dtype_name(t));
  FP8LM_CHECK(t != DType::kE4M3 || mode_ == ComputeMode::kFP8,
              "an E4M3 weight needs an fp8 Linear");
  const bool blocks = w.mode != ScalingMode::kNone && w.mode != ScalingMode::kTensor;
  FP8LM_CHECK(!blocks || (fine() && w.mode == fp8_.recipe->w_fwd &&
                          w.mode == fp8_.recipe->w_dgrad),
              "a ", scaling_mode_name(w.mode), "-scaled weight needs a recipe whose GEMMs read "
              "the weight in those blocks");
  w_ = w;
  if (mode_ == ComputeMode::kFP8 && t != DType::kE4M3 && !fine()) {  // as quantize() does, JIT
    float amax = kernels::amax(w.data.data, t, in_ * out_, w.tensor_scale());
    if (share_) amax = share_(amax);
    w8_meta_.set_scale_from_amax(amax);
    w8_meta_.record_amax(amax);
  }
}

void Linear::add_adapter(size_t rank, float scale, bool grads) {
  FP8LM_CHECK(rank >= 1 && rank <= std::min(in_, out_) && !fine() && rank_ == 0,
              "add_adapter: rank ", rank, " for a ", in_, "x", out_, " Linear",
              fine() ? " (LoRA needs a per-tensor recipe)" : "");
  rank_ = rank;
  lora_scale_ = scale;
  const Shape us{i64(rows_), i64(rank)};
  const auto act = MemCategory::kActivations, ws = MemCategory::kWorkspace;
  a8_meta_ = b8_meta_ = u8_meta_ = ScalingMeta(scaling(DType::kE4M3, ScalingTiming::kJustInTime));
  du8_meta_ = ScalingMeta(scaling(DType::kE5M2, ScalingTiming::kJustInTime));
  switch (mode_) {
    case ComputeMode::kF32:
      u_ = Tensor(DType::kF32, us, act);  // computed in place
      break;
    case ComputeMode::kBF16:
      u_ = Tensor(DType::kBF16, us, act);
      if (grads) du_ = Tensor(DType::kBF16, us, ws);
      break;
    case ComputeMode::kFP8:
      u_ = Tensor(DType::kE4M3, us, act);
      if (grads) du_ = Tensor(DType::kE5M2, us, ws);
      break;
  }
  if (mode_ != ComputeMode::kF32) u32_ = Tensor(DType::kF32, us, ws);
  if (!grads) return;
  du32_ = Tensor(DType::kF32, us, ws);
  g_a_ = make_grad(in_, rank);
  g_b_ = make_grad(rank, out_);
}

void Linear::prepare_adapter(const ScaledView& a, const ScaledView& b) {
  FP8LM_CHECK(rank_ > 0 && a.numel() == in_ * rank_ && b.numel() == rank_ * out_,
              "prepare_adapter: A ", a.data.shape.str(), " and B ", b.data.shape.str(), " for a ",
              in_, "x", out_, " Linear of rank ", rank_);
  a_ = a;
  b_ = b;
  if (mode_ != ComputeMode::kFP8) return;
  for (auto [v, m] : {std::pair{&a_, &a8_meta_}, std::pair{&b_, &b8_meta_}})
    m->set_scale_from_amax(kernels::amax(v->data.data, v->data.dtype, v->numel(), v->tensor_scale()));
}

kernels::GemmOperand Linear::saved_u() const {
  return {u_.data(), u_.dtype(), false, 0,
          mode_ == ComputeMode::kFP8 ? u8_meta_.scale_inv : 1.0f};
}

void Linear::adapter_forward(const kernels::GemmOperand& x, void* y, DType y_type) {
  const size_t n = rows_ * rank_;
  float* u = mode_ == ComputeMode::kF32 ? u_.as<float>() : u32_.as<float>();
  kernels::gemm(rows_, rank_, in_, 1.0f, x, cast_operand(a_, a8_meta_), 0.0f, {u, DType::kF32});
  if (mode_ == ComputeMode::kBF16)
    kernels::quantize(u_.data(), DType::kBF16, u, n, 1.0f, /*saturate=*/false);
  else if (mode_ == ComputeMode::kFP8)
    quantize(u8_meta_, u_.data(), u, n);
  // Added to y as stored (a BF16 y is rounded once more).
  kernels::gemm(rows_, out_, rank_, lora_scale_, saved_u(), cast_operand(b_, b8_meta_), 1.0f,
                {y, y_type});
}

void Linear::write_grad(
    ScaledTensor& dst, bool accumulate,
    const std::function<void(const kernels::GemmOutput& out, float beta)>& gemm_into) {
  if (dst.data.dtype() != DType::kE4M3) {
    gemm_into({dst.data.as<float>(), DType::kF32}, accumulate ? 1.0f : 0.0f);
    return;
  }
  // Accumulate in FP32 on the dequantized gradient, then requantize just-in-time (the
  // GEMM's epilogue takes the amax, so the cast makes no pass of its own for it).
  if (accumulate) dequantize(ws_.w, dst);
  float amax = 0.0f;
  kernels::GemmOutput out{ws_.w, DType::kF32};
  out.amax = &amax;
  gemm_into(out, accumulate ? 1.0f : 0.0f);
  quantize(dst, ws_.w, {}, &amax);
}

void Linear::adapter_backward(const kernels::GemmOperand& x, const kernels::GemmOperand& g,
                              float* dx, bool accumulate) {
  FP8LM_CHECK(g_a_.data.data() != nullptr, "adapter backward without gradient buffers");
  const size_t n = rows_ * rank_;
  // du = s·dy·Bᵀ [rows, r];  dB = s·uᵀ·dy;  dA = xᵀ·du;  dx += du·Aᵀ
  float* du = du32_.as<float>();
  kernels::GemmOperand bt = cast_operand(b_, b8_meta_), ut = saved_u(), xt = x;
  bt.transposed = ut.transposed = xt.transposed = true;
  kernels::gemm(rows_, rank_, out_, lora_scale_, g, bt, 0.0f, {du, DType::kF32});
  write_grad(g_b_, accumulate, [&](const kernels::GemmOutput& o, float beta) {
    kernels::gemm(rank_, out_, rows_, lora_scale_, ut, g, beta, o);
  });
  kernels::GemmOperand d{du, DType::kF32};
  if (mode_ == ComputeMode::kBF16) {
    kernels::quantize(du_.data(), DType::kBF16, du, n, 1.0f, /*saturate=*/false);
    d = {du_.data(), DType::kBF16};
  } else if (mode_ == ComputeMode::kFP8) {
    quantize(du8_meta_, du_.data(), du, n);
    d = {du_.data(), DType::kE5M2, false, 0, du8_meta_.scale_inv};
  }
  write_grad(g_a_, accumulate, [&](const kernels::GemmOutput& o, float beta) {
    kernels::gemm(in_, rank_, rows_, 1.0f, xt, d, beta, o);
  });
  kernels::GemmOperand at = cast_operand(a_, a8_meta_);
  at.transposed = true;
  kernels::gemm(rows_, in_, rank_, 1.0f, d, at, 1.0f, {dx, DType::kF32});
}

kernels::GemmOperand Linear::weight_operand(ScalingMode fine_mode) {
  if (fine()) {
    // Already in the GEMM's blocks (O3's 128×128 replica): used as it is. Otherwise W's
    // exact values, then blocks (an E4M3 replica is requantized exactly).
    if (w_.mode == fine_mode) return kernels::gemm_operand(w_);
    kernels::dequantize(ws_.w, w_);
    return kernels::gemm_operand(
        quantize_into(ws_.w8, ws_.w8_scales, DType::kE4M3, ws_.w, in_, out_, fine_mode));
  }
  return cast_operand(w_, w8_meta_);
}

kernels::GemmOperand Linear::cast_operand(const ScaledView& v, const ScalingMeta& meta) const {
  const float s = v.tensor_scale();
  kernels::GemmOperand o{v.data.data, v.data.dtype, false, 0, s};
  if (mode_ == ComputeMode::kBF16) {
    o.scale_inv = 1.0f;
    o.cast_to = DType::kBF16;
    o.cast_mul = s;
  } else if (mode_ == ComputeMode::kFP8 && v.data.dtype != DType::kE4M3) {
    o.scale_inv = meta.scale_inv;
    o.cast_to = DType::kE4M3;
    o.cast_mul = s * meta.scale;
  }
  return o;
}

float* Linear::input_buffer(float* scratch) {
  return mode_ == ComputeMode::kF32 ? x_.as<float>() : scratch;
}

void Linear::commit_input(const float* x) {
  if (mode_ == ComputeMode::kBF16) {
    kernels::quantize(x_.data(), DType::kBF16, x, rows_ * in_, 1.0f, /*saturate=*/false);
  } else if (mode_ == ComputeMode::kFP8) {
    quantize(x8_, x, input_share());
    if (fine()) quantize(xt8_, x, input_share());
    if (probing()) {
      probe_->record(name_, "x", x, x8_.view());
      if (fine()) probe_->record(name_, "x.wgrad", x, xt8_.view());
    }
  }
}

void Linear::commit_input_rows(const float* x, size_t r0, size_t n, const RowGather& gather) {
  FP8LM_CHECK(gathers_fp8_rows() && r0 + n <= rows_, "commit_input_rows: rows ", r0, "+", n,
              " of ", rows_, (gathers_fp8_rows() ? "" : " (fine recipes gather the whole input)"));
  const size_t count = n * in_;
  switch (mode_) {
    case ComputeMode::kF32: {
      float* slot = x_.as<float>() + r0 * in_;
      if (slot != x) std::memcpy(slot, x, count * sizeof(float));
      gather(x_.data(), count * sizeof(float), DType::kF32);
      break;
    }
    case ComputeMode::kBF16:
      kernels::quantize(static_cast<uint16_t*>(x_.data()) + r0 * in_, DType::kBF16, x, count,
                        1.0f, /*saturate=*/false);
      gather(x_.data(), count * sizeof(uint16_t), DType::kBF16);
      break;
    case ComputeMode::kFP8: {
      auto* slot = static_cast<uint8_t*>(x8_.data.data()) + r0 * in_;
      quantize(x8_.meta, slot, x, count, share_);  // one scale for every rank's rows
      if (probing())
        probe_->record(name_, "x", x,
                       tensor_view(static_cast<const void*>(slot), DType::kE4M3,
                                   Shape{i64(n), i64(in_)}, &x8_.meta.scale_inv));
      gather(x8_.data.data(), count, DType::kE4M3);
      break;
    }
  }
}

const float* Linear::saved_input_f32(float* scratch) const {
  FP8LM_CHECK(mode_ != ComputeMode::kFP8, "the fp8 saved input is E4M3; keep a wider copy");
  if (mode_ == ComputeMode::kF32) return x_.as<float>();
  kernels::dequantize(scratch, x_.data(), DType::kBF16, rows_ * in_, 1.0f);
  return scratch;
}

ExponentRange Linear::bf16_range(const void* data, DType type, size_t n) const {
  if (mode_ != ComputeMode::kBF16 || !kernels::gemm_has_bf16_dot()) return {};
  return kernels::exponent_range(data, type, 1, n);
}

void Linear::forward(void* y, DType y_type, const float* bias) {
  kernels::GemmOperand a;
  switch (mode_) {
    case ComputeMode::kF32:
      a = {x_.data(), DType::kF32};
      break;
    case ComputeMode::kBF16:
      a = {x_.data(), DType::kBF16};
      break;
    case ComputeMode::kFP8:
      a = kernels::gemm_operand(x8_.view());
      break;
  }
  kernels::GemmOperand b = weight_operand(fine() ? fp8_.recipe->w_fwd : ScalingMode::kNone);
  // BF16 products may take the dot kernel with the FMA kernel's bits (their ranges decide).
  a.exps = bf16_range(x_.data(), DType::kBF16, rows_ * in_);
  w_exps_ = b.exps = bf16_range(w_.data.data, w_.data.dtype, in_ * out_);
  kernels::GemmOutput o{y, y_type};
  o.bias = bias;
  kernels::gemm(rows_, out_, in_, 1.0f, a, b, 0.0f, o);
  if (rank_ > 0) adapter_forward(a, y, y_type);
  if (probing()) probe_weight();
}

void Linear::backward(float* dx, const float* dy, ScaledTensor& dw, float* dbias,
                      bool accumulate, const GradRows* rows) {
  FP8LM_CHECK(rows == nullptr || (mode_ == ComputeMode::kFP8 && !fine() && rank_ == 0),
              "Linear::backward: gathered output-gradient rows need an fp8 per-tensor recipe "
              "and no adapter");
  kernels::GemmOperand g, x;  // dy, saved x
  switch (mode_) {
    case ComputeMode::kF32:
      g = {dy, DType::kF32};
      x = {x_.data(), DType::kF32};
      break;
    case ComputeMode::kBF16:
      kernels::quantize(ws_.dy, DType::kBF16, dy, rows_ * out_, 1.0f, false);
      g = {ws_.dy, DType::kBF16};
      x = {x_.data(), DType::kBF16};
      g.exps = bf16_range(ws_.dy, DType::kBF16, rows_ * out_);
      x.exps = bf16_range(x_.data(), DType::kBF16, rows_ * in_);
      break;
    case ComputeMode::kFP8:
      if (rows != nullptr) {  // this rank's rows, one scale for all, then the payload gathered
        auto* slot = static_cast<uint8_t*>(ws_.dy) + rows->r0 * out_;
        quantize(dy8_meta_, slot, dy, rows->n * out_, share_);
        if (probing())
          probe_->record(name_, "dy", dy,
                         tensor_view(static_cast<const void*>(slot), fp8_.dy,
                                     {i64(rows->n), i64(out_)}, &dy8_meta_.scale_inv));
        rows->gather(ws_.dy, rows->n * out_, fp8_.dy);
        g = kernels::gemm_operand(tensor_view(static_cast<const void*>(ws_.dy), fp8_.dy,
                                              {i64(rows_), i64(out_)}, &dy8_meta_.scale_inv));
        x = kernels::gemm_operand(x8_.view());
      } else if (!fine()) {
        quantize(dy8_meta_, ws_.dy, dy, rows_ * out_, output_share());
        const ScaledView v = tensor_view(static_cast<const void*>(ws_.dy), fp8_.dy,
                                         {i64(rows_), i64(out_)}, &dy8_meta_.scale_inv);
        if (probing()) probe_->record(name_, "dy", dy, v);
        g = kernels::gemm_operand(v);
        x = kernels::gemm_operand(x8_.view());
      } else {
        float amax = 0.0f;
        const ScaledView v = quantize_into(ws_.dy, ws_.dy_scales, fp8_.dy, dy, rows_, out_,
                                           fp8_.recipe->dy_dgrad, &amax);
        if (probing()) probe_->record(name_, "dy", dy, v);
        g = kernels::gemm_operand(v);
        if (output_split_ && share_) amax = share_(amax);
        dy8_meta_.record_amax(amax);
      }
      break;
  }
  kernels::GemmOperand w =
      weight_operand(fine() ? fp8_.recipe->w_dgrad : ScalingMode::kNone);
  w.exps = w_exps_;  // (bf16: unchanged since forward)
  // dgrad: dx [rows, in] = dy [rows, out] · Wᵀ
  w.transposed = true;
  kernels::gemm(rows_, in_, out_, 1.0f, g, w, 0.0f, {dx, DType::kF32});
  if (rank_ > 0) adapter_backward(x, g, dx, accumulate);
  // wgrad: dW [in, out] (+)= xᵀ [in, rows] · dy [rows, out], both tiled along rows; none for
  // a frozen W.
  if (dw.data.data() != nullptr) {
    if (fine()) {
      const ScaledView v = quantize_into(ws_.dyt8, ws_.dyt_scales, fp8_.dy, dy, rows_, out_,
                                         fp8_.recipe->dy_wgrad);
      if (probing()) probe_->record(name_, "dy.wgrad", dy, v);
      g = kernels::gemm_operand(v);
      x = kernels::gemm_operand(xt8_.view());
    }
    x.transposed = true;
    write_grad(dw, accumulate, [&](const kernels::GemmOutput& o, float beta) {
      kernels::gemm(in_, out_, rows_, 1.0f, x, g, beta, o);
    });
    if (probing() && dw.data.dtype() == DType::kE4M3) probe_->record(name_, "dW", ws_.w, dw.view());
  }
  if (!accumulate) std::memset(dbias, 0, out_ * sizeof(float));
  kernels::column_sum(dbias, dy, rows != nullptr ? rows->n : rows_, out_);
}

}  // namespace fp8lm
