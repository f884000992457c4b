// Finite-difference checks, in FP64, of every reference op's backward pass.
#include "model/ref_ops.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>

namespace fp8lm::ref {
namespace {

Vec random_vec(size_t n, std::mt19937& rng, double sd = 1.0) {
  std::normal_distribution<double> d(0.0, sd);
  Vec v(n);
  for (double& x : v) x = d(rng);
  return v;
}

// Checks analytic ∂L/∂x against central differences of L(x), for every element.
void check_grad(Vec& x, const Vec& analytic, const std::function<double()>& loss,
                const char* what) {
  constexpr double kH = 1e-6;
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + kH;
    const double lp = loss();
    x[i] = x0 - kH;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (2 * kH);
    worst = std::max(worst, std::fabs(fd - analytic[i]) / (std::fabs(fd) + std::fabs(analytic[i]) + 1e-3));
  }
  EXPECT_LT(worst, 1e-6) << what;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(RefOpsGrad, LayerNorm) {
  std::mt19937 rng(1);
  const size_t R = 3, C = 7;
  Vec x = random_vec(R * C, rng), w = random_vec(C, rng), b = random_vec(C, rng);
  const Vec g = random_vec(R * C, rng);
  auto loss = [&] {
    Vec y;
    layernorm_fwd(y, x, w, b, R, C);
    return dot(y, g);
  };
  Vec dx(R * C, 0), dw(C, 0), db(C, 0);
  layernorm_bwd(dx, dw, db, g, x, w, R, C);
  check_grad(x, dx, loss, "dx");
  check_grad(w, dw, loss, "dw");
  check_grad(b, db, loss, "db");
}

TEST(RefOpsGrad, LinearAndGelu) {
  std::mt19937 rng(2);
  const size_t M = 4, K = 5, N = 3;
  Vec x = random_vec(M * K, rng), W = random_vec(K * N, rng), b = random_vec(N, rng);
  const Vec g = random_vec(M * N, rng);
  auto loss = [&] {
    Vec y;
    linear_fwd(y, x, W, b.data(), M, K, N);
    for (double& v : y) v = gelu(v);
    return dot(y, g);
  };
  Vec y;
  linear_fwd(y, x, W, b.data(), M, K, N);
  Vec dy(M * N);
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = g[i] * gelu_grad(y[i]);
  Vec dx(M * K, 0), dW(K * N, 0), db(N, 0);
  linear_bwd(dx, dW, db.data(), dy, x, W, M, K, N);
  check_grad(x, dx, loss, "dx");
  check_grad(W, dW, loss, "dW");
  check_grad(b, db, loss, "db");
}

TEST(RefOpsGrad, Attention) {
  std::mt19937 rng(3);
  const size_t B = 2, T = 5, C = 6, NH = 2;
  Vec qkv = random_vec(B * T * 3 * C, rng);
  const Vec g = random_vec(B * T * C, rng);
  auto loss = [&] {
    Vec out;
    attention_fwd(out, qkv, B, T, C, NH);
    return dot(out, g);
  };
  Vec dqkv(qkv.size(), 0);
  attention_bwd(dqkv, g, qkv, B, T, C, NH);
  check_grad(qkv, dqkv, loss, "dqkv");
}

TEST(RefOpsGrad, CrossEntropy) {
  std::mt19937 rng(4);
  const size_t R = 4, V = 9;
  Vec logits = random_vec(R * V, rng, 3.0);
  const std::vector<int32_t> t = {0, 8, 3, 3};
  Vec d;
  cross_entropy(logits, t, R, V, &d);
  check_grad(logits, d, [&] { return cross_entropy(logits, t, R, V, nullptr); }, "dlogits");
  // Per-row weights (negative too), a row left out (target < 0): its loss and gradient 0.
  const std::vector<int32_t> t2 = {0, -1, 3, 8};
  const Vec w = {0.5, 7.0, -1.25, 2.0};
  cross_entropy(logits, t2, R, V, &d, &w);
  check_grad(
      logits, d, [&] { return cross_entropy(logits, t2, R, V, nullptr, &w); }, "weighted");
  for (size_t c = 0; c < V; ++c) EXPECT_EQ(d[V + c], 0.0);
  Vec first(logits.begin(), logits.begin() + V);
  const std::vector<int32_t> t0 = {0};
  const Vec w0 = {0.5};
  EXPECT_NEAR(
      cross_entropy(logits, t2, R, V, nullptr, &w) - cross_entropy(first, t0, 1, V, nullptr, &w0),
      cross_entropy(logits, {-1, -1, 3, 8}, R, V, nullptr, &w), 1e-12);
}

}  // namespace
}  // namespace fp8lm::ref
