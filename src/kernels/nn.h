// Kernels of the transformer's non-GEMM layers, in FP32: residual add, GELU, bias
// gradients, LayerNorm, causal attention, softmax cross-entropy. Backend-neutral: pointers
// and sizes only. Shapes use B (batch), T (time), C (channels), NH (heads), V (vocab).
// Reductions over rows split the rows statically over the threads and combine the partial
// sums in thread order, so results are deterministic for a given thread count.
#pragma once

#include <cstddef>
#include <cstdint>

#include "numerics/exponent_range.h"

namespace fp8lm::kernels {

// out[i] = a[i] + b[i]
void add(float* out, const float* a, const float* b, size_t n);

// GELU, tanh form: out = 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).
void gelu_forward(float* out, const float* x, size_t n);
// dx[i] = dout[i] · gelu'(x[i]) (overwrites dx; dx may alias dout).
void gelu_backward(float* dx, const float* x, const float* dout, size_t n);
// The same with x stored as BF16 bits (the MLP pre-activation the fp8/bf16 modes keep),
// decoded on the fly: the same results as on its FP32 values, without an FP32 copy.
void gelu_forward_bf16(float* out, const uint16_t* x, size_t n);
void gelu_backward_bf16(float* dx, const uint16_t* x, const float* dout, size_t n);

// out[c] += Σ_r x[r, c] for x [rows, cols] (bias gradients).
void column_sum(float* out, const float* x, size_t rows, size_t cols);

// LayerNorm over the last dimension C, eps = 1e-5:
// out = (x − mean)·rstd·w + b; mean, rstd [rows] are kept for the backward pass.
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, size_t rows, size_t C);
// dx += ∂L/∂x, dw += ∂L/∂w, db += ∂L/∂b given dout.
void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                        const float* mean, const float* rstd, const float* w, size_t rows,
                        size_t C);

// Causal multi-head self-attention, computed in blocks of 64 query rows through the GEMM (no
// T×T score matrix is stored: one block's, 64×T, per thread). qkv [B, T, 3C] holds q | k | v; out [B, T, C]; lse [B, NH, T]
// keeps each row's log-sum-exp of the scaled scores for the backward pass.
void attention_forward(float* out, float* lse, const float* qkv, size_t B, size_t T, size_t C,
                       size_t NH);
// One head's causal attention for `rows` queries at positions [i0, i0 + rows) against the keys
// and values at positions [0, i0 + rows) (a key/value cache): out row r =
// softmax(q_r·Kᵀ/√HS)·V over the keys ≤ i0 + r. Rows of q, k, v and out at strides ldq, ldkv, ldkv, ld_out; scratch
// holds attention_rows_scratch(i0 + rows) floats. attention_forward's arithmetic for those rows:
// a row's bits do not depend on how the rows are split into calls.
void attention_rows(float* out, size_t ld_out, const float* q, size_t ldq, const float* k,
                    const float* v, size_t ldkv, size_t HS, size_t i0, size_t rows,
                    float* scratch);
size_t attention_rows_scratch(size_t keys);
// dqkv [B, T, 3C] = ∂L/∂qkv (overwritten) given dout [B, T, C] and the forward's out, lse.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, size_t B, size_t T, size_t C, size_t NH);

// Softmax cross-entropy over rows of logits [rows, Vp] whose first V columns are valid.
// losses[r] = logsumexp(logits[r, :V]) − logits[r, target[r]]; rows with target < 0 are
// skipped (loss 0, zero gradient). If grad_scale != 0, logits are overwritten with
// grad_scale · (softmax − onehot) (zero in the padded columns), and with `grad_exps` the
// gradient's exponent range (numerics/exponent_range.h; may be wider than the values').
void softmax_cross_entropy(float* logits, float* losses, const int32_t* targets, size_t rows,
                           size_t V, size_t Vp, float grad_scale,
                           ExponentRange* grad_exps = nullptr);

// Its two halves, for a vocabulary split over ranks (the caller combines the rows' statistics
// across the ranks): per row of logits [rows, Vp], the max m over the first V columns (−inf
// when V = 0) and Σ exp(x − m), the columns overwritten with exp(x − m) (each logit goes
// through exp once); then each row times mul[r], zero in the padded columns (with the group's
// max M and sum S, mul = g · exp(m − M) / S makes it g · softmax), with `exps` the scaled
// values' exponent range.
void logit_row_exps(float* logits, size_t rows, size_t V, size_t Vp, float* max, float* sumexp);
void scale_rows(float* logits, size_t rows, size_t V, size_t Vp, const float* mul,
                ExponentRange* exps = nullptr);

}  // namespace fp8lm::kernels
