#include "model/linear.h"

#include <cstring>

#include "core/check.h"
#include "kernels/cast.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"

namespace fp8lm {
namespace {

ScalingRecipe recipe(DType format, ScalingTiming timing, const Fp8Options& o = {}) {
  ScalingRecipe r;
  r.format = format;
  r.timing = timing;
  r.window = o.window;
  r.margin = o.margin;
  return r;
}

int64_t i64(size_t v) { return static_cast<int64_t>(v); }

}  // namespace

Linear::Linear(ComputeMode mode, size_t in, size_t out, size_t rows, const Fp8Options& fp8)
    : mode_(mode), in_(in), out_(out), rows_(rows), fp8_(fp8) {
  const Shape xs{i64(rows), i64(in)}, ws{i64(in), i64(out)}, ys{i64(rows), i64(out)};
  switch (mode) {
    case ComputeMode::kF32:
      x_ = Tensor(DType::kF32, xs, MemCategory::kActivations);
      break;
    case ComputeMode::kBF16:
      x_ = Tensor(DType::kBF16, xs, MemCategory::kActivations);
      w_ = Tensor(DType::kBF16, ws, MemCategory::kWeights);
      dy16_ = Tensor(DType::kBF16, ys, MemCategory::kWorkspace);
      break;
    case ComputeMode::kFP8:
      x8_ = ScaledTensor(xs, recipe(DType::kE4M3, fp8.timing, fp8), MemCategory::kActivations);
      w8_ = ScaledTensor(ws, recipe(DType::kE4M3, ScalingTiming::kJustInTime),
                         MemCategory::kWeights);
      dy8_ = ScaledTensor(ys, recipe(DType::kE5M2, fp8.timing, fp8), MemCategory::kWorkspace);
      dw_tmp_ = Tensor(DType::kF32, ws, MemCategory::kWorkspace);
      break;
  }
}

WeightGrad Linear::make_grad() const {
  WeightGrad g;
  const Shape ws{i64(in_), i64(out_)};
  if (mode_ == ComputeMode::kFP8) {
    g.e4m3 = ScaledTensor(ws, recipe(DType::kE4M3, ScalingTiming::kJustInTime),
                          MemCategory::kGradients);
    std::memset(g.e4m3.data.data(), 0, g.e4m3.data.bytes());
  } else {
    g.f32 = Tensor(DType::kF32, ws, MemCategory::kGradients);
    std::memset(g.f32.data(), 0, g.f32.bytes());
  }
  return g;
}

std::vector<ScalingMeta*> Linear::scaling_metas() {
  if (mode_ != ComputeMode::kFP8) return {};
  return {&x8_.meta, &dy8_.meta};
}

void Linear::prepare_weight(const float* w) {
  w_master_ = w;
  if (mode_ == ComputeMode::kBF16) {
    kernels::quantize(w_.data(), DType::kBF16, w, in_ * out_, 1.0f, /*saturate=*/false);
  } else if (mode_ == ComputeMode::kFP8) {
    quantize(w8_, w);
  }
}

float* Linear::input_buffer(float* scratch) {
  return mode_ == ComputeMode::kF32 ? x_.as<float>() : scratch;
}

void Linear::commit_input(const float* x) {
  if (mode_ == ComputeMode::kBF16) {
    kernels::quantize(x_.data(), DType::kBF16, x, rows_ * in_, 1.0f, /*saturate=*/false);
  } else if (mode_ == ComputeMode::kFP8) {
    quantize(x8_, x);
  }
}

const float* Linear::saved_input_f32(float* scratch) const {
  FP8LM_CHECK(mode_ != ComputeMode::kFP8, "the fp8 saved input is E4M3; keep a wider copy");
  if (mode_ == ComputeMode::kF32) return x_.as<float>();
  kernels::dequantize(scratch, x_.data(), DType::kBF16, rows_ * in_, 1.0f);
  return scratch;
}

void Linear::forward(void* y, DType y_type, const float* bias) {
  kernels::GemmOperand a, b;
  switch (mode_) {
    case ComputeMode::kF32:
      a = {x_.data(), DType::kF32};
      b = {w_master_, DType::kF32};
      break;
    case ComputeMode::kBF16:
      a = {x_.data(), DType::kBF16};
      b = {w_.data(), DType::kBF16};
      break;
    case ComputeMode::kFP8:
      a = {x8_.data.data(), DType::kE4M3, false, 0, x8_.meta.scale_inv};
      b = {w8_.data.data(), DType::kE4M3, false, 0, w8_.meta.scale_inv};
      break;
  }
  kernels::GemmOutput o{y, y_type};
  o.bias = bias;
  kernels::gemm(rows_, out_, in_, 1.0f, a, b, 0.0f, o);
}

void Linear::backward(float* dx, const float* dy, WeightGrad& dw, float* dbias, bool accumulate) {
  kernels::GemmOperand g, x, w;  // dy, saved x, working W
  switch (mode_) {
    case ComputeMode::kF32:
      g = {dy, DType::kF32};
      x = {x_.data(), DType::kF32};
      w = {w_master_, DType::kF32};
      break;
    case ComputeMode::kBF16:
      kernels::quantize(dy16_.data(), DType::kBF16, dy, rows_ * out_, 1.0f, false);
      g = {dy16_.data(), DType::kBF16};
      x = {x_.data(), DType::kBF16};
      w = {w_.data(), DType::kBF16};
      break;
    case ComputeMode::kFP8:
      quantize(dy8_, dy);
      g = {dy8_.data.data(), DType::kE5M2, false, 0, dy8_.meta.scale_inv};
      x = {x8_.data.data(), DType::kE4M3, false, 0, x8_.meta.scale_inv};
      w = {w8_.data.data(), DType::kE4M3, false, 0, w8_.meta.scale_inv};
      break;
  }
  // dgrad: dx [rows, in] = dy [rows, out] · Wᵀ
  w.transposed = true;
  kernels::gemm(rows_, in_, out_, 1.0f, g, w, 0.0f, {dx, DType::kF32});
  // wgrad: dW [in, out] (+)= xᵀ [in, rows] · dy [rows, out]
  x.transposed = true;
  if (dw.is_fp8()) {
    // Accumulate in FP32 on the dequantized gradient, then requantize just-in-time.
    if (accumulate) dequantize(dw_tmp_.as<float>(), dw.e4m3);
    kernels::gemm(in_, out_, rows_, 1.0f, x, g, accumulate ? 1.0f : 0.0f,
                  {dw_tmp_.data(), DType::kF32});
    quantize(dw.e4m3, dw_tmp_.as<float>());
  } else {
    kernels::gemm(in_, out_, rows_, 1.0f, x, g, accumulate ? 1.0f : 0.0f,
                  {dw.f32.data(), DType::kF32});
  }
  if (!accumulate) std::memset(dbias, 0, out_ * sizeof(float));
  kernels::column_sum(dbias, dy, rows_, out_);
}

}  // namespace fp8lm
