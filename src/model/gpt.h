// The GPT-2 model: forward and backward by hand, for a fixed batch shape (B, T).
//
// Per block: x → LayerNorm → c_attn (fused QKV) → causal attention → c_proj → + x →
// LayerNorm → c_fc → GELU → c_proj → + ; then a final LayerNorm and the LM head tied to
// wte, fused with softmax cross-entropy over chunks of rows (the B·T × V logits are never
// held at once) that have a target (positions without one add nothing to the loss or its
// gradient: fine-tuning's prompts and padding skip the LM head). Linear layers run in the compute mode (model/linear.h); LayerNorm,
// attention, GELU, residuals, embeddings, the LM head and the loss stay in FP32 (the LM head's
// operands may be BF16: set_lm_head).
//
// Tensor parallelism (docs/parallelism.md; with a TpComm): c_attn and c_fc are column-parallel
// (heads split), both c_proj row-parallel (their partial outputs summed over the group before
// the bias), wte split by vocabulary rows (the embedding sums the owners' rows; the LM head
// computes its logit columns and the cross-entropy combines the rows' max and Σexp over the
// group, so the B·T × V logits are never gathered). LayerNorms, residuals and the other
// parameters are replicated and their gradients equal on every rank.
//
// Pipeline parallelism (docs/parallelism.md; with a PpComm): the model holds one stage's
// layers (param_layout); the first stage embeds, the last runs ln_f, the LM head and the loss,
// and the residual stream and its gradient cross the stage boundaries through the PpComm.
// Micro-batches in flight (the 1F1B schedule) keep their saved activations in slots.
//
// Saved activations (what backward needs), per block and token, in C-sized units:
//   residual in (f32), ln_1 out (c_attn input, mode format), qkv (f32 | bf16 in bf16/fp8),
//   attention out (c_proj input, mode format; fp8 also keeps a bf16 copy for the softmax
//   backward), residual mid (f32), ln_2 out (c_fc input), fc pre-GELU (f32 | bf16), GELU out
//   (c_proj input); plus LayerNorm mean/rstd and the attention log-sum-exp. A model without
//   gradients keeps one block's set, handed from block to block as the forward goes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/linear.h"
#include "model/lora.h"
#include "model/params.h"
#include "model/pipeline.h"
#include "model/tensor_parallel.h"

namespace fp8lm {

class Gpt {
 public:
  // Activations are allocated for batches of B sequences of T tokens (T <= seq_len); without
  // `with_grads` (evaluation, sampling) no gradient buffers are, and only forward/logits
  // may be called. The weights are read through set_weights(), which must come before the
  // first forward.
  // With `tp` (outliving the model) the model holds rank tp->shard()'s part of every
  // parameter (param_layout) and every rank of the group must make the same calls.
  // With `pp` (outliving the model) it holds stage pp->stage()'s layers; every rank of the
  // pipeline makes the matching calls (forward on every stage, backward on every stage).
  // With `lora` on (model/lora.h; no tensor or pipeline parallelism) the weights are frozen
  // and only the adapters train: gradients exist for them alone (trainable_specs()).
  Gpt(const GptConfig& cfg, ComputeMode mode, size_t B, size_t T, const Fp8Options& fp8 = {},
      bool with_grads = true, TpComm* tp = nullptr, PpComm* pp = nullptr,
      const LoraSpec& lora = {});
  // On the FP32 values of `params` (read at every forward: later changes are seen).
  Gpt(const GptParams& params, ComputeMode mode, size_t B, size_t T, const Fp8Options& fp8 = {},
      bool with_grads = true);
  ~Gpt();
  Gpt(const Gpt&) = delete;
  Gpt& operator=(const Gpt&) = delete;

  const GptConfig& config() const { return cfg_; }
  // This rank's shard of each parameter (all of it without tensor parallelism).
  const std::vector<ParamSpec>& specs() const { return specs_; }
  TpShard shard() const { return shard_; }
  PpStage stage() const { return stage_; }
  ComputeMode mode() const { return mode_; }
  size_t batch() const { return B_; }
  size_t seq() const { return T_; }

  // One view per specs() entry, per tensor or unscaled: f32, f16 or bf16 (Linear weights
  // must be f32 in fp32 mode; fp8 Linear weights may also be E4M3, per tensor or in the
  // recipe's weight blocks). Views are live: data and scales are read at every forward, so
  // an optimizer updating them in place needs no new call; call again only when storage moves.
  void set_weights(std::vector<ScaledView> weights);

  // LoRA: the adapters (lora_layout), and their values as f32 or f16 per-tensor views, live
  // like set_weights' (before the first forward, after set_weights).
  const LoraSpec& lora() const { return lora_; }
  void set_adapters(std::vector<ScaledView> adapters);
  // What trains: specs() in full training, the adapters' specs with LoRA. grad(), grad_values()
  // and grad_buffers() index these.
  const std::vector<ParamSpec>& trainable_specs() const {
    return lora_.on() ? adapter_specs_ : specs_;
  }

  // Mean cross-entropy over the B·T positions (targets < 0 are ignored, they count in the
  // mean's denominator as zero). No gradients, and the delayed-scaling state is left as it
  // was: evaluating never changes what training does next.
  float forward(const int32_t* tokens, const int32_t* targets);
  // forward + backward: the gradients of the mean loss are written (or added, with
  // `accumulate`) into the gradient buffers.
  float forward_backward(const int32_t* tokens, const int32_t* targets, bool accumulate = false);
  // Each target's weight in the loss of forward/forward_backward/stage_forward: the loss is
  // Σ_t loss_t · w (0, the default: w = 1/(B·T), the mean over positions). Fine-tuning sets
  // it so a step's gradient is the mean over its target tokens, however they fall in rows.
  void set_loss_weight(float w) { loss_weight_ = w; }
  // The LM head's operands (lnf rows, wte, the logits' gradient): f32 (the default) or bf16,
  // cast while packed, as FP8-LM's BF16 baseline runs its output layer. BF16 products run on
  // the AVX512-BF16 dot kernel where the CPU has it, with the bits of every other target
  // (kernels/gemm.h). Throws Error for another dtype.
  void set_lm_head(DType operands);
  DType lm_head() const { return lm_head_bf16_ ? DType::kBF16 : DType::kF32; }
  // Per-target weights decided from the forward's own losses, for objectives that weigh each
  // token's log-probability by a function of the log-probabilities (DPO, GRPO): the loss of
  // forward_backward is Σ_t loss_t · w[t] (set_loss_weight unused; w[t] may be negative), one
  // forward serving both. Once the losses of rows [r0, r0 + n) are known and before their
  // gradient is formed, fn(r0, n, losses, w) fills w[r0, r0 + n) (losses and w: the whole
  // [B·T] arrays); n is a multiple of `group` rows and r0 starts a group (a preference pair,
  // a sampled row), and the calls cover every row once, in order. Groups larger than a
  // logits chunk cost a loss-only pass of the LM head first. Null fn: off (the default).
  // forward() never calls it.
  using TokenWeightFn = std::function<void(size_t r0, size_t n, const float* losses, float* w)>;
  void set_token_weight_fn(TokenWeightFn fn, size_t group);
  // Each position's loss −log p(target) of the last forward on the last stage [B·T] (0 where
  // the target is < 0; valid until the next forward).
  const float* token_losses() const { return ws_losses_.as<float>(); }
  // Logits [B·T, V] (unpadded) for tokens; for sampling and tests (one stage only).
  void logits(const int32_t* tokens, float* out);
  // Logits [n, V] of the n positions rows[0..n) (each < B·T) only: the bits logits() has at
  // those rows, the LM head run for them alone (sampling reads one position per sequence).
  void logits_at(const int32_t* tokens, const size_t* rows, size_t n, float* out);

  // The pipeline's steps, one micro-batch at a time (forward() and forward_backward() are
  // these on slot 0, with the loss shared). Slots hold the saved activations of the
  // micro-batches in flight: `slot` < slots(). stage_forward returns the loss on the last
  // stage (0 elsewhere); with `grads`, stage_backward of the same slot must follow before
  // the slot is used again. `accumulate`: add to the gradients (the step's later
  // micro-batches). The first stage reads tokens (forward and backward), the last targets.
  float stage_forward(const int32_t* tokens, const int32_t* targets, size_t slot, bool grads,
                      bool accumulate);
  void stage_backward(const int32_t* tokens, size_t slot, bool accumulate);
  // Activation slots (1 at construction); more allocate copies of every saved activation.
  void set_slots(size_t n);
  size_t slots() const { return stash_.size(); }
  // After the step's last backward: wte's gradient summed over the first and last stage
  // (the tied embedding and LM head), so both copies take the same update. No-op without
  // a pipeline.
  void sum_tied_grads();

  // Gradient of trainable tensor `spec` as FP32 values.
  void grad_values(size_t spec, float* out) const;
  // The same gradient in its stored format: f32, or e4m3 with its per-tensor scale (fp8).
  ScaledView grad(size_t spec) const;
  // Every gradient, in spec order, writable: collectives replace payloads and scales in place.
  std::vector<MutableScaledView> grad_buffers();
  // Delayed-scaling state of every FP8 Linear layer, in a fixed order (for checkpoints).
  std::vector<ScalingMeta*> scaling_metas();
  // How many scaling_metas() a model of `cfg` has in `mode` (two per FP8 Linear layer).
  static size_t scaling_meta_count(const GptConfig& cfg, ComputeMode mode);
  // Reports every FP8 cast of the model (each Linear's x, W, dy, dW by its Hugging Face name,
  // e.g. "h.0.attn.c_attn", and the E4M3 gradients of the other tensors as "grad") to
  // `probe` while it is armed; null stops reporting. fp8 mode only.
  void set_probe(QuantProbe* probe);
  // Bytes of saved activations, from the memory accounting of this model's allocations.
  size_t activation_bytes() const { return activation_bytes_; }

 private:
  struct Block;
  MutableScaledView grad_buffer(size_t spec);
  const float* small(size_t spec) const { return small_.as<float>() + small_off_[spec]; }
  float* grad_buf(size_t spec) const { return grads_.as<float>() + grad_off_[spec]; }
  // `rows`/`n` (with logits): the LM head's rows, default all B·T (logits_at).
  float run_forward(const int32_t* tokens, const int32_t* targets, bool grads, float* logits,
                    const size_t* rows = nullptr, size_t n = 0);
  // Zeroes the FP32 gradients, or (accumulate) sets them to the gradient so far.
  void begin_grads(bool accumulate);
  // The saved activations of `slot` into the layers (swapped with those they hold).
  void select_slot(size_t slot);
  // Without gradients (pass_along_): the one set of block activations to block `to`.
  void hand_over(size_t to);
  bool first() const { return stage_.first(); }
  bool last() const { return stage_.last(); }
  void embed(const int32_t* tokens);
  void forward_blocks();
  // LM head + loss over row chunks; with grads, also dlnf and dwte.
  float head(const int32_t* targets, bool grads, float* logits_out, const size_t* rows = nullptr,
             size_t n = 0);
  void backward(const int32_t* tokens, bool accumulate);

  // Tensor-parallel transitions (no-ops without tensor parallelism; docs/parallelism.md).
  // TP → SP: y [B·T, C] holds this rank's partial sums of a row-parallel layer's output;
  // returns this rank's rows of the sum (all rows without SP; `out` holds them with SP) plus
  // the bias — or y itself without TP (the GEMM added the bias).
  float* exit_tp(float* y, const float* bias, float* out);
  // SP → TP: `full` [B·T, C] holds this rank's rows in their place; lin's whole input is
  // gathered (cast first where the layer saves FP8) and committed. scratch: BF16 staging.
  void enter_tp(Linear& lin, float* full, void* scratch);
  // Gathers every rank's rows of `full` in place, through f32 or bf16 (staged in scratch).
  void gather_rows(float* full, DType format, void* scratch);
  // Backward: every row of the residual gradient whose rows this rank holds in `rows`.
  const float* full_rows(const float* rows);
  // Backward of a row-parallel layer from this rank's rows of the residual gradient: the
  // layer gathers its E5M2 output gradient (fp8 per-tensor recipes) or takes full_rows().
  void back_row_parallel(Linear& lin, float* dx, const float* dres, ScaledTensor& dw,
                         float* dbias, bool acc);
  // Backward: this rank's rows of the sum over the group of `partial` [B·T, C] (in `out`
  // with SP; in place, all rows, without).
  const float* enter_sp(float* partial, float* out);
  void tp_sum(float* x, size_t n) {
    if (tp_ != nullptr) tp_->allreduce_sum(x, n);
  }
  // The vocabulary-parallel cross-entropy of one chunk of rows (losses, and the logits
  // overwritten with their gradient when grad_scale != 0).
  // `row_scale` (null: grad_scale for every row): each row's own grad_scale. With `grad_exps`
  // the gradient's exponent range (for the BF16 LM head's dot products).
  void parallel_cross_entropy(float* logits, float* losses, const int32_t* targets, size_t rows,
                              float grad_scale, const float* row_scale = nullptr,
                              ExponentRange* grad_exps = nullptr);
  // Its two halves: the rows' losses (the logits left as this rank's exp(x − m), `norm` the
  // factor that makes them the softmax), then the logits overwritten with the gradient
  // g[r] · (softmax − onehot) (g[r] = 0 where the target is < 0).
  void chunk_losses(float* logits, float* losses, const int32_t* targets, size_t rows,
                    std::vector<float>& norm);
  void chunk_grads(float* logits, const int32_t* targets, size_t rows,
                   const std::vector<float>& norm, float grad_scale, const float* row_scale,
                   ExponentRange* grad_exps = nullptr);

  GptConfig cfg_;
  TpComm* tp_;
  TpShard shard_;
  PpComm* pp_;
  PpStage stage_;
  std::vector<ParamSpec> specs_;
  // Positions in specs_ of the tensors outside blocks (npos on stages without them).
  static constexpr size_t npos = ~size_t{0};
  size_t wte_ = npos, wpe_ = npos, lnf_w_ = npos, lnf_b_ = npos;
  ComputeMode mode_;
  size_t B_, T_, BT_;
  // Per rank: embedding width and heads of the attention, vocabulary rows of wte [v0_,
  // v0_ + Vpl_), of which the first Vl_ are real tokens (the rest padding).
  size_t Cl_, NHl_, v0_, Vpl_, Vl_;
  // Sequence parallelism: this rank's rows [r0_, r0_ + Rl_) of B·T (all of them without);
  // the wire of reduce-scatters and backward gathers; the BF16 gather baseline.
  bool sp_ = false;
  size_t Rl_ = 0, r0_ = 0;
  DType wire_ = DType::kF32;
  bool gather_bf16_ = false;
  bool fp8_grad_rows_ = false;  // c_proj layers gather their E5M2 output gradient rows
  std::vector<size_t> sp_sum_specs_;  // LayerNorm parameters: gradients summed over the rows
  bool with_grads_;
  float loss_weight_ = 0;
  bool lm_head_bf16_ = false;
  TokenWeightFn weight_fn_;
  size_t weight_group_ = 1;
  std::vector<float> token_weights_;  // [B·T] while weight_fn_ is set
  std::vector<ScaledView> weights_;
  // FP32 values of the parameters that are neither Linear weights nor wte (positions,
  // LayerNorm, biases: small), refreshed from weights_ at every forward.
  Tensor small_;
  std::vector<size_t> small_off_;
  // LoRA: the adapters' specs, their views, and the layer each pair (A, B) belongs to.
  LoraSpec lora_;
  std::vector<ParamSpec> adapter_specs_;
  std::vector<ScaledView> adapters_;
  std::vector<Linear*> adapter_layer_;  // per pair
  std::vector<std::unique_ptr<Block>> blocks_;
  Tensor resid_final_, lnf_, lnf_mean_, lnf_rstd_;  // activations after the last block
  // FP32 gradients of everything but the Linear weights, packed in spec order. They are the
  // gradients in fp32/bf16 modes; in fp8 mode they are staging, stored as E4M3 in grad8_.
  Tensor grads_;
  std::vector<size_t> grad_off_;
  std::vector<ScaledTensor> grad8_;
  // Workspace (not saved): staging and activation gradients.
  Tensor ws_a_, ws_b_, ws_qkv_, ws_dres_, ws_logits_, ws_losses_, ws_w_, ws_dy_;
  Tensor ws_gather_;  // logits() with TP: every rank's columns of a chunk (made on first use)
  Tensor ws_full_;    // sequence parallelism: every rank's rows of the residual gradient
  Tensor ws_w8_, ws_w8_scales_, ws_dyt8_, ws_dy_scales_;  // fine-grained scaling staging
  // Positions in specs_ of each block's tensors, found by name.
  struct BlockSpecs {
    size_t ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fcproj_w,
        fcproj_b;
  };
  std::vector<BlockSpecs> block_specs_;
  size_t activation_bytes_ = 0;
  size_t chunk_rows_ = 0;
  // Activation slots: live_ lists every saved activation the layers hold (tensors, and the
  // per-tensor scales of FP8 ones); stash_[s] holds slot s's while the layers hold slot
  // held_'s (stash_[held_] is then empty).
  struct Saved {
    std::vector<Tensor> tensors;
    std::vector<float> scales;
  };
  std::vector<Tensor*> live_;
  std::vector<float*> live_scales_;
  std::vector<Saved> stash_;
  size_t held_ = 0;
  bool pass_along_ = false;
  size_t acts_at_ = 0;  // the block holding the activations, with pass_along_
  QuantProbe* probe_ = nullptr;
};

}  // namespace fp8lm
