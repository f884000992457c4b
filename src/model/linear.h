// One Linear layer y = x·W + b (W [in, out], Hugging Face Conv1D layout) in a compute mode:
//   fp32: FP32 operands;  bf16: BF16 operands, FP32 accumulation;
//   fp8 (docs/numerics.md), per-tensor recipes: x → E4M3 (delayed, window 16), W → E4M3
//   (just-in-time), dy → E5M2 (delayed, window 16); dgrad E5M2×E4M3, wgrad E4M3×E5M2 reusing
//   the saved E4M3 x; fine recipes (block, mxfp8): x, W, dy per block as the precision plan
//   says. The weight gradient is stored as E4M3 with a just-in-time scale.
// The layer keeps its input for the backward pass in the mode's format (that is the saved
// activation). The weight has no working copy: the GEMMs read the master (f32, or f16 with
// its scale) and cast it while packing (bf16, or e4m3 with a just-in-time scale), which is
// bit-identical to computing on the cast copy; fine recipes quantize it per block into a
// shared buffer before each GEMM. Staging buffers that are dead between calls (FP32 weight
// gradient, narrow output gradient, the block-quantized weight) are shared by all layers.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"
#include "kernels/gemm.h"
#include "tensor/precision_plan.h"
#include "tensor/quant_stats.h"
#include "tensor/scaled_view.h"
#include "tensor/scaling.h"
#include "tensor/tensor.h"

namespace fp8lm {

// How the fp8 mode scales its GEMM operands: the recipe's row of the precision plan. Per-tensor
// recipes scale x and dy from their amax history (delayed) or just in time; weights and weight
// gradients are always just in time. Fine recipes (block, mxfp8; docs/numerics.md, Block
// scaling) quantize x, W and dy per block just in time from FP32, once per GEMM orientation:
// a tile along K of the forward pass is not one along K of the weight gradient, so x and dy
// get a second copy tiled the other way (from the FP32 values, not from the first copy).
struct Fp8Options {
  const RecipePlan* recipe = &recipe_plan("delayed");
  int window = 16;  // amax history of the delayed recipe
  int margin = 0;
  DType dy = DType::kE5M2;  // the output gradient's format
};
// The options of a recipe by name (precision.{recipe, amax_window, margin, mx_grad_format});
// throws Error for an unknown recipe.
Fp8Options fp8_options(std::string_view recipe, int amax_window = 16, int margin = 0,
                       std::string_view mx_grad_format = "e4m3");

// Staging shared by the layers of a model, sized for the largest: `w` holds in·out floats
// (fp8 weight-gradient accumulation), `dy` rows·out elements of the mode's output-gradient
// format (bf16 or e5m2). Fine-grained scaling adds the block-quantized weight (w8, in·out
// bytes), dy's second orientation (dyt8, rows·out bytes) and their scale grids (each
// linear_grid_bytes(rows or in, out)).
struct LinearWorkspace {
  float* w = nullptr;
  void* dy = nullptr;
  void* w8 = nullptr;
  void* w8_scales = nullptr;
  void* dyt8 = nullptr;
  void* dy_scales = nullptr;
  void* dyt_scales = nullptr;
};
// Bytes that hold the scale grid of an r × c matrix in any block mode.
size_t linear_grid_bytes(size_t r, size_t c);

class Linear {
 public:
  // Without `saves_input` the saved input's tensors stay empty (input_tensors()) and the
  // owner lends them before each forward: a model without gradients passes one block's
  // activations from layer to layer.
  Linear(ComputeMode mode, size_t in, size_t out, size_t rows, const LinearWorkspace& ws,
         const Fp8Options& fp8 = {}, bool saves_input = true);

  // Collects every rank's part of a payload in place (sequence parallelism): base holds this
  // rank's part at its offset; every part is bytes_per_rank of `format`.
  using RowGather = std::function<void(void* base, size_t bytes_per_rank, DType format)>;

  size_t in() const { return in_; }
  size_t out() const { return out_; }

  // The master W [in, out] this layer computes on until the next call (before each
  // forward; fp8 takes the weight's just-in-time scale from its amax here). fp32 mode needs
  // an FP32 master; fp8 mode also takes W already cast to E4M3 (O3's replicated weights:
  // per tensor, or in the recipe's weight blocks when forward and dgrad share them, as
  // 128×128 blocks do). The data must stay valid through backward.
  void prepare_weight(const ScaledView& w);

  // Where the caller writes this layer's FP32 input [rows, in]. In fp32 mode this is the
  // saved input itself; otherwise `scratch`, converted by commit_input().
  float* input_buffer(float* scratch);
  void commit_input(const float* x);

  // Sequence parallelism (docs/parallelism.md): `x` holds rows [r0, r0 + n) of the input (this
  // rank's part, the rows every other rank holds follow the same split). The layer casts them
  // to its saved format — f32, bf16, or e4m3 with the group's shared scale (the amax goes
  // through the share of set_amax_share) — into their place in the saved input, and
  // `gather(base, bytes_per_rank, format)` collects every rank's part in place. Per-tensor
  // formats only (fine recipes commit the gathered whole input).
  void commit_input_rows(const float* x, size_t r0, size_t n, const RowGather& gather);
  bool gathers_fp8_rows() const { return mode_ != ComputeMode::kFP8 || !fine(); }

  // The saved input as FP32 (fp32/bf16 modes): the buffer itself, or dequantized to scratch.
  const float* saved_input_f32(float* scratch) const;

  // y [rows, out] = x·W + bias, written as y_type (f32 or bf16).
  void forward(void* y, DType y_type, const float* bias);

  // dx [rows, in] = dy·Wᵀ (overwritten); dW and dbias get the gradient, added to what they
  // hold when `accumulate`. dy is FP32 [rows, out] — or, with `rows` (sequence parallelism,
  // fp8 per-tensor recipes: gathers_fp8_rows()), only rows [r0, r0 + n) of it: the layer
  // casts them to the output-gradient format with the group's scale and gathers the payload
  // for both GEMMs; dbias then gets these rows' part (the caller sums it over the group).
  struct GradRows {
    size_t r0, n;
    RowGather gather;
  };
  void backward(float* dx, const float* dy, ScaledTensor& dw, float* dbias, bool accumulate,
                const GradRows* rows = nullptr);

  // A gradient buffer of the right format for this layer's weight: FP32 (scale 1), or E4M3
  // with a just-in-time scale in fp8 mode. An empty ScaledTensor passed to backward as dw
  // means a frozen weight: no weight gradient is computed.
  ScaledTensor make_grad() const;
  ScaledTensor make_grad(size_t in, size_t out) const;

  // LoRA (model/lora.h): y += s·(x·A)·B beside W, in the mode's formats — the GEMMs read the
  // saved input, A and B cast on the fly like W (bf16, or e4m3 with just-in-time scales), and
  // u = x·A is saved in the input's format (e4m3 with a just-in-time scale in fp8 mode);
  // backward adds the adapter's part to dx and writes (or, with `accumulate`, adds) the
  // gradients of A and B in the weight gradient's format. Per-tensor recipes, whole rows.
  void add_adapter(size_t rank, float scale, bool grads);
  bool has_adapter() const { return rank_ > 0; }
  // The masters A [in, r] and B [r, out] until the next call (before each forward).
  void prepare_adapter(const ScaledView& a, const ScaledView& b);
  ScaledTensor& adapter_grad(bool b) { return b ? g_b_ : g_a_; }

  // Pipeline slots: the tensors and per-tensor scales that make up the saved input (what
  // forward leaves for backward), appended to `tensors` and `scales`.
  void saved_state(std::vector<Tensor*>& tensors, std::vector<float*>& scales);
  // The saved input's tensors in a fixed order, allocated or not (the LoRA adapter's u not
  // among them), appended to `tensors`.
  void input_tensors(std::vector<Tensor*>& tensors);

  // The delayed-scaling state of the saved input and of the output gradient (fp8 mode;
  // empty otherwise), for checkpoints.
  std::vector<ScalingMeta*> scaling_metas();

  // Tensor parallelism (fp8 per-tensor scales): the weight is a shard, and so is the input
  // (row-parallel layers) or the output gradient (column-parallel ones); their amaxes go
  // through `share` so every rank of the group scales them alike (tensor/scaling.h).
  void set_amax_share(AmaxShare share, bool input_split, bool output_split) {
    share_ = std::move(share);
    input_split_ = input_split;
    output_split_ = output_split;
  }

  // Reports this layer's FP8 casts (x, W, dy, dW; fine recipes also x.wgrad, dy.wgrad) to
  // `probe` under `name` whenever the probe is armed (telemetry, docs/telemetry.md).
  void set_probe(QuantProbe* probe, std::string name);

 private:
  ComputeMode mode_;
  size_t in_, out_, rows_;
  Fp8Options fp8_;
  // The weight as a GEMM operand: the master, cast on the fly in bf16/fp8 modes; with
  // fine-grained scaling, quantized into the shared w8 in `fine_mode`.
  kernels::GemmOperand weight_operand(ScalingMode fine_mode = ScalingMode::kNone);
  bool fine() const { return mode_ == ComputeMode::kFP8 && fp8_.recipe->fine != FineScaling::kNone; }
  bool probing() const { return probe_ != nullptr && probe_->wants(); }
  // The weight's cast as the forward GEMM reads it, against the master's values.
  void probe_weight();

  Tensor x_;          // saved input: f32 / bf16 (activations)
  // bf16 mode on a CPU with the GEMM's dot kernel: the exponent ranges of BF16 operands
  // (kernels/gemm.h); the weight's measured at forward serves the backward too (weights
  // change only between steps; saved inputs move between pipeline slots, so theirs is not kept).
  ExponentRange w_exps_;
  ExponentRange bf16_range(const void* data, DType type, size_t n) const;
  ScaledTensor x8_;   // saved input: e4m3, delayed (fp8), or tiled along in (fine)
  ScaledTensor xt8_;  // fine: the saved input tiled along rows (weight gradient)
  ScaledView w_;      // the master weight (or O3's replica)
  ScalingMeta w8_meta_;  // its e4m3 scale, just-in-time (fp8)
  LinearWorkspace ws_;
  ScalingMeta dy8_meta_;  // e5m2 output gradient, delayed (payload in ws_.dy)
  // The adapter: rank, scale, masters with their just-in-time e4m3 scales (fp8), u = x·A
  // (FP32 staging, and saved in the input's format), du = s·dy·Bᵀ (FP32 staging, and in
  // the output gradient's format), gradients.
  size_t rank_ = 0;
  float lora_scale_ = 0;
  ScaledView a_, b_;
  ScalingMeta a8_meta_, b8_meta_;
  Tensor u32_, u_, du32_, du_;
  ScalingMeta u8_meta_, du8_meta_;
  ScaledTensor g_a_, g_b_;
  // A master as a GEMM operand in this mode (cast on the fly with `meta`'s scale in fp8).
  kernels::GemmOperand cast_operand(const ScaledView& v, const ScalingMeta& meta) const;
  kernels::GemmOperand saved_u() const;
  void adapter_forward(const kernels::GemmOperand& x, void* y, DType y_type);
  void adapter_backward(const kernels::GemmOperand& x, const kernels::GemmOperand& g, float* dx,
                        bool accumulate);
  // dst (+)= the FP32 product written by gemm_into (in place, or staged through ws_.w when
  // dst is e4m3, with the product's amax taken by the GEMM for the just-in-time cast).
  void write_grad(
      ScaledTensor& dst, bool accumulate,
      const std::function<void(const kernels::GemmOutput& out, float beta)>& gemm_into);

  QuantProbe* probe_ = nullptr;
  std::string name_;
  AmaxShare share_;
  bool input_split_ = false, output_split_ = false;
  const AmaxShare& input_share() const { return input_split_ ? share_ : kNoShare; }
  const AmaxShare& output_share() const { return output_split_ ? share_ : kNoShare; }
  static inline const AmaxShare kNoShare{};
};

}  // namespace fp8lm
