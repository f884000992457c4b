// Plain FP64 reference implementations of every model op, forward and backward, written
// for clarity rather than speed. They are the test oracle: finite differences check their
// backward passes, and the FP32 kernels and the model are compared against them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace fp8lm::ref {

using Vec = std::vector<double>;

inline double gelu(double x) {
  return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
inline double gelu_grad(double x) {
  const double k = 0.7978845608028654, u = k * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
}

// Mean and 1/sqrt(variance + 1e-5) of row r of x [rows, C].
inline void row_stats(const Vec& x, size_t r, size_t C, double* mean, double* rstd) {
  double m = 0, v = 0;
  for (size_t c = 0; c < C; ++c) m += x[r * C + c];
  m /= C;
  for (size_t c = 0; c < C; ++c) v += (x[r * C + c] - m) * (x[r * C + c] - m);
  *mean = m;
  *rstd = 1.0 / std::sqrt(v / C + 1e-5);
}

// y [rows, C] = layernorm(x) · w + b; eps 1e-5.
inline void layernorm_fwd(Vec& y, const Vec& x, const Vec& w, const Vec& b, size_t rows,
                          size_t C) {
  y.assign(rows * C, 0);
  for (size_t r = 0; r < rows; ++r) {
    double m, rs;
    row_stats(x, r, C, &m, &rs);
    for (size_t c = 0; c < C; ++c) y[r * C + c] = (x[r * C + c] - m) * rs * w[c] + b[c];
  }
}
inline void layernorm_bwd(Vec& dx, Vec& dw, Vec& db, const Vec& dy, const Vec& x, const Vec& w,
                          size_t rows, size_t C) {
  for (size_t r = 0; r < rows; ++r) {
    double m, rs;
    row_stats(x, r, C, &m, &rs);
    double s1 = 0, s2 = 0;
    for (size_t c = 0; c < C; ++c) {
      const double n = (x[r * C + c] - m) * rs, dn = dy[r * C + c] * w[c];
      s1 += dn;
      s2 += dn * n;
      dw[c] += dy[r * C + c] * n;
      db[c] += dy[r * C + c];
    }
    for (size_t c = 0; c < C; ++c) {
      const double n = (x[r * C + c] - m) * rs, dn = dy[r * C + c] * w[c];
      dx[r * C + c] += (dn - s1 / C - n * s2 / C) * rs;
    }
  }
}

// y [M, N] = x [M, K] · W [K, N] + b (Hugging Face Conv1D layout).
inline void linear_fwd(Vec& y, const Vec& x, const Vec& W, const double* b, size_t M, size_t K,
                       size_t N) {
  y.assign(M * N, 0);
  for (size_t i = 0; i < M; ++i)
    for (size_t j = 0; j < N; ++j) {
      double s = b ? b[j] : 0;
      for (size_t k = 0; k < K; ++k) s += x[i * K + k] * W[k * N + j];
      y[i * N + j] = s;
    }
}
inline void linear_bwd(Vec& dx, Vec& dW, double* db, const Vec& dy, const Vec& x, const Vec& W,
                       size_t M, size_t K, size_t N) {
  for (size_t i = 0; i < M; ++i)
    for (size_t j = 0; j < N; ++j) {
      const double g = dy[i * N + j];
      if (db) db[j] += g;
      for (size_t k = 0; k < K; ++k) {
        dx[i * K + k] += g * W[k * N + j];
        dW[k * N + j] += g * x[i * K + k];
      }
    }
}

// Causal attention on qkv [B, T, 3C] → out [B, T, C], with the full softmax.
inline void attention_fwd(Vec& out, const Vec& qkv, size_t B, size_t T, size_t C, size_t NH) {
  const size_t HS = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  out.assign(B * T * C, 0);
  std::vector<double> p(T);
  for (size_t b = 0; b < B; ++b)
    for (size_t h = 0; h < NH; ++h)
      for (size_t i = 0; i < T; ++i) {
        const double* q = &qkv[(b * T + i) * 3 * C + h * HS];
        double m = -std::numeric_limits<double>::infinity(), sum = 0;
        for (size_t j = 0; j <= i; ++j) {
          const double* k = &qkv[(b * T + j) * 3 * C + C + h * HS];
          double s = 0;
          for (size_t d = 0; d < HS; ++d) s += q[d] * k[d];
          p[j] = s * scale;
          m = std::max(m, p[j]);
        }
        for (size_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - m));
        for (size_t j = 0; j <= i; ++j) {
          const double* v = &qkv[(b * T + j) * 3 * C + 2 * C + h * HS];
          for (size_t d = 0; d < HS; ++d) out[(b * T + i) * C + h * HS + d] += p[j] / sum * v[d];
        }
      }
}
inline void attention_bwd(Vec& dqkv, const Vec& dout, const Vec& qkv, size_t B, size_t T,
                          size_t C, size_t NH) {
  const size_t HS = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  std::vector<double> p(T), dp(T);
  for (size_t b = 0; b < B; ++b)
    for (size_t h = 0; h < NH; ++h)
      for (size_t i = 0; i < T; ++i) {
        const size_t qo = (b * T + i) * 3 * C + h * HS;
        double m = -std::numeric_limits<double>::infinity(), sum = 0;
        for (size_t j = 0; j <= i; ++j) {
          double s = 0;
          for (size_t d = 0; d < HS; ++d) s += qkv[qo + d] * qkv[(b * T + j) * 3 * C + C + h * HS + d];
          p[j] = s * scale;
          m = std::max(m, p[j]);
        }
        for (size_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - m));
        for (size_t j = 0; j <= i; ++j) p[j] /= sum;
        const double* g = &dout[(b * T + i) * C + h * HS];
        double dot = 0;
        for (size_t j = 0; j <= i; ++j) {
          const size_t vo = (b * T + j) * 3 * C + 2 * C + h * HS;
          dp[j] = 0;
          for (size_t d = 0; d < HS; ++d) {
            dp[j] += g[d] * qkv[vo + d];
            dqkv[vo + d] += p[j] * g[d];
          }
          dot += p[j] * dp[j];
        }
        for (size_t j = 0; j <= i; ++j) {
          const double ds = p[j] * (dp[j] - dot) * scale;
          const size_t ko = (b * T + j) * 3 * C + C + h * HS;
          for (size_t d = 0; d < HS; ++d) {
            dqkv[qo + d] += ds * qkv[ko + d];
            dqkv[ko + d] += ds * qkv[qo + d];
          }
        }
      }
}

// Σ_r w_r · (−log softmax(logits[r, :V])[target[r]]) with w_r = 1/rows (the mean) or
// (weights) weights[r]; rows whose target is < 0 are left out. dlogits = ∂loss/∂logits.
inline double cross_entropy(const Vec& logits, const std::vector<int32_t>& targets, size_t rows,
                            size_t V, Vec* dlogits, const Vec* weights = nullptr) {
  double loss = 0;
  if (dlogits) dlogits->assign(rows * V, 0);
  for (size_t r = 0; r < rows; ++r) {
    if (targets[r] < 0) continue;
    const double w = weights != nullptr ? (*weights)[r] : 1.0 / static_cast<double>(rows);
    double m = -std::numeric_limits<double>::infinity(), sum = 0;
    for (size_t c = 0; c < V; ++c) m = std::max(m, logits[r * V + c]);
    for (size_t c = 0; c < V; ++c) sum += std::exp(logits[r * V + c] - m);
    const double lse = m + std::log(sum);
    loss += w * (lse - logits[r * V + static_cast<size_t>(targets[r])]);
    if (dlogits) {
      for (size_t c = 0; c < V; ++c) (*dlogits)[r * V + c] = w * std::exp(logits[r * V + c] - lse);
      (*dlogits)[r * V + static_cast<size_t>(targets[r])] -= w;
    }
  }
  return loss;
}

}  // namespace fp8lm::ref
