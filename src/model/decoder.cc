#include "model/decoder.h"

#include <cstring>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/gemm.h"
#include "kernels/nn.h"

namespace fp8lm {
namespace {

constexpr size_t kPerBlock = 12;  // tensors per block, in param_layout's order

Tensor workspace(size_t rows, size_t cols) {
  return Tensor(DType::kF32, Shape{static_cast<int64_t>(rows), static_cast<int64_t>(cols)},
                MemCategory::kWorkspace);
}

// y [n, out] = x [n, in] · w [in, out] + bias
void linear(float* y, const float* x, const float* w, const float* bias, size_t n, size_t in,
            size_t out) {
  kernels::GemmOutput o{y, DType::kF32};
  o.bias = bias;
  kernels::gemm(n, out, in, 1.0f, {x, DType::kF32}, {w, DType::kF32}, 0.0f, o);
}

}  // namespace

GptDecoder::GptDecoder(const GptParams& params, size_t rows, size_t positions)
    : params_(params),
      rows_(rows),
      T_(positions > 0 ? positions : static_cast<size_t>(params.config().seq_len)),
      C_(static_cast<size_t>(params.config().n_embd)),
      NH_(static_cast<size_t>(params.config().n_head)),
      L_(static_cast<size_t>(params.config().n_layer)),
      V_(static_cast<size_t>(params.config().vocab_size)),
      length_(rows, 0) {
  FP8LM_CHECK(rows > 0, "decoder: no rows");
  FP8LM_CHECK(T_ <= static_cast<size_t>(params.config().seq_len), "decoder: ", T_,
              " positions, the model has ", params.config().seq_len);
  FP8LM_CHECK(params.specs().size() == 4 + kPerBlock * L_ &&
                  params.specs()[0].shape == params.specs()[0].full_shape,
              "decoder: the parameters of one whole model (no tensor or pipeline split)");
  const Shape cache{static_cast<int64_t>(L_ * rows_ * T_), static_cast<int64_t>(C_)};
  k_cache_ = Tensor(DType::kF32, cache, MemCategory::kActivations);
  v_cache_ = Tensor(DType::kF32, cache, MemCategory::kActivations);
}

void GptDecoder::reset(size_t row) { length_.at(row) = 0; }

void GptDecoder::append(const std::vector<std::vector<int32_t>>& tokens, float* logits) {
  FP8LM_CHECK(tokens.size() <= rows_, "decoder: tokens for ", tokens.size(), " rows, it has ",
              rows_);
  // The new tokens as one matrix of n rows: token i is row_of[i]'s at position pos_of[i].
  std::vector<size_t> row_of, pos_of;
  for (size_t r = 0; r < tokens.size(); ++r) {
    if (length_[r] + tokens[r].size() > T_)
      fail("decoder: row ", r, " would hold ", length_[r] + tokens[r].size(),
           " tokens, more than its ", T_, " positions");
    for (size_t j = 0; j < tokens[r].size(); ++j) {
      const int32_t t = tokens[r][j];
      if (t < 0 || static_cast<size_t>(t) >= V_)
        fail("decoder: token ", t, " is outside the vocabulary of ", V_);
      row_of.push_back(r);
      pos_of.push_back(length_[r] + j);
    }
  }
  const size_t n = row_of.size();
  if (n == 0) return;
  const size_t C = C_, HS = C_ / NH_;
  Tensor x_t = workspace(n, C), ln_t = workspace(n, C), y_t = workspace(n, C),
         qkv_t = workspace(n, 3 * C), fc_t = workspace(n, 4 * C), g_t = workspace(n, 4 * C),
         stats_t = workspace(2, n);
  float *x = x_t.as<float>(), *ln = ln_t.as<float>(), *y = y_t.as<float>();
  float *qkv = qkv_t.as<float>(), *fc = fc_t.as<float>(), *g = g_t.as<float>();
  float *mean = stats_t.as<float>(), *rstd = mean + n;

  size_t i = 0;
  for (size_t r = 0; r < tokens.size(); ++r)
    for (const int32_t t : tokens[r]) {
      const float* e = params_.wte() + static_cast<size_t>(t) * C;
      const float* p = params_.wpe() + pos_of[i] * C;
      for (size_t c = 0; c < C; ++c) x[i * C + c] = e[c] + p[c];
      ++i;
    }

  // The new tokens of each row that got any: consecutive positions, consecutive in x.
  struct Run {
    size_t row, first, count;
  };
  std::vector<Run> runs;
  for (size_t k = 0; k < n; ++k) {
    if (runs.empty() || runs.back().row != row_of[k]) runs.push_back({row_of[k], k, 0});
    ++runs.back().count;
  }
  const size_t per_task = kernels::attention_rows_scratch(T_);
  Tensor scratch_t = workspace(chunk_count(runs.size() * NH_, 1), per_task);
  float* scratch = scratch_t.as<float>();
  for (size_t l = 0; l < L_; ++l) {
    auto w = [&](size_t k) { return params_.at(2 + l * kPerBlock + k); };
    float* kc = k_cache_.as<float>() + l * rows_ * T_ * C;
    float* vc = v_cache_.as<float>() + l * rows_ * T_ * C;
    kernels::layernorm_forward(ln, mean, rstd, x, w(0), w(1), n, C);
    linear(qkv, ln, w(2), w(3), n, C, 3 * C);
    for (size_t k = 0; k < n; ++k) {  // this call's keys and values join the cache first
      const size_t at = (row_of[k] * T_ + pos_of[k]) * C;
      std::memcpy(kc + at, qkv + k * 3 * C + C, C * sizeof(float));
      std::memcpy(vc + at, qkv + k * 3 * C + 2 * C, C * sizeof(float));
    }
    // Each row's new tokens and head: causal attention against the row's cache, whose keys
    // and values now run to the last new token (the training forward's arithmetic).
    parallel_for(runs.size() * NH_, 1, 1, [&](size_t c, size_t lo, size_t hi) {
      for (size_t u = lo; u < hi; ++u) {
        const Run& run = runs[u / NH_];
        const size_t h = u % NH_, at = run.row * T_ * C + h * HS;
        kernels::attention_rows(y + run.first * C + h * HS, C, qkv + run.first * 3 * C + h * HS,
                                3 * C, kc + at, vc + at, C, HS, pos_of[run.first], run.count,
                                scratch + c * per_task);
      }
    });
    linear(ln, y, w(4), w(5), n, C, C);  // attention's projection, into ln (free here)
    kernels::add(x, x, ln, n * C);
    kernels::layernorm_forward(ln, mean, rstd, x, w(6), w(7), n, C);
    linear(fc, ln, w(8), w(9), n, C, 4 * C);
    kernels::gelu_forward(g, fc, n * 4 * C);
    linear(y, g, w(10), w(11), n, 4 * C, C);
    kernels::add(x, x, y, n * C);
  }
  for (size_t r = 0; r < tokens.size(); ++r) length_[r] += tokens[r].size();

  // The LM head on each row's last new token only: ln_f, then · wteᵀ (tied).
  std::vector<size_t> last_of;  // index into the n new tokens, per row that got any
  std::vector<size_t> out_row;
  for (size_t k = 0; k < n; ++k)
    if (k + 1 == n || row_of[k + 1] != row_of[k]) {
      last_of.push_back(k);
      out_row.push_back(row_of[k]);
    }
  const size_t m = last_of.size();
  for (size_t j = 0; j < m; ++j) std::memcpy(y + j * C, x + last_of[j] * C, C * sizeof(float));
  kernels::layernorm_forward(ln, mean, rstd, y, params_.lnf_w(), params_.lnf_b(), m, C);
  Tensor out_t = workspace(m, V_);
  kernels::GemmOperand wte_t{params_.wte(), DType::kF32};
  wte_t.transposed = true;  // stored [Vp, C]: the first V rows are the vocabulary
  wte_t.ld = C;
  kernels::gemm(m, V_, C, 1.0f, {ln, DType::kF32}, wte_t, 0.0f, {out_t.as<float>(), DType::kF32});
  for (size_t j = 0; j < m; ++j)
    std::memcpy(logits + out_row[j] * V_, out_t.as<float>() + j * V_, V_ * sizeof(float));
}

}  // namespace fp8lm
