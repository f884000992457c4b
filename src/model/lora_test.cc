// LoRA adapters: the Linear layer's adapter against FP64 arithmetic in every compute mode, and
// the adapted GPT against the merged model W + s·A·B (same loss; adapter gradients by the
// chain rule from the merged model's weight gradients: dA = s·dW·Bᵀ, dB = s·Aᵀ·dW).
#include "model/lora.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/check.h"
#include "model/gpt.h"
#include "model/linear.h"
#include "tensor/precision_plan.h"

namespace fp8lm {
namespace {

std::vector<float> normal(size_t n, float sd, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

ScaledView f32_view(const std::vector<float>& v, size_t r, size_t c) {
  return tensor_view(static_cast<const void*>(v.data()), DType::kF32,
                     Shape{static_cast<int64_t>(r), static_cast<int64_t>(c)}, nullptr);
}

// C [M, N] = op(A) · op(B) in FP64, with A [M, K] (or [K, M] when ta) and B [K, N] (or [N, K]).
std::vector<double> matmul(const std::vector<double>& a, const std::vector<double>& b, size_t M,
                           size_t N, size_t K, bool ta = false, bool tb = false) {
  std::vector<double> c(M * N, 0.0);
  for (size_t i = 0; i < M; ++i)
    for (size_t k = 0; k < K; ++k) {
      const double av = ta ? a[k * M + i] : a[i * K + k];
      for (size_t j = 0; j < N; ++j) c[i * N + j] += av * (tb ? b[j * K + k] : b[k * N + j]);
    }
  return c;
}
std::vector<double> wide(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// max |got − want| / max |want|
double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double e = 0, m = 1e-300;
  for (size_t i = 0; i < want.size(); ++i) {
    e = std::max(e, std::fabs(got[i] - want[i]));
    m = std::max(m, std::fabs(want[i]));
  }
  return e / m;
}

struct ModeCase {
  ComputeMode mode;
  double tol;  // relative to the largest value: FP32 accumulation, or the narrow formats
};

class LoraLinear : public ::testing::TestWithParam<ModeCase> {};

TEST_P(LoraLinear, ForwardAndGradientsMatchFp64) {
  const auto [mode, tol] = GetParam();
  const size_t rows = 37, in = 48, out = 40, r = 4;
  const float s = 2.0f;
  const std::vector<float> x = normal(rows * in, 1, 1), w = normal(in * out, 0.1f, 2),
                           a = normal(in * r, 0.2f, 3), b = normal(r * out, 0.3f, 4),
                           dy = normal(rows * out, 1, 5), bias = normal(out, 1, 6);
  std::vector<float> wsw(4 * in * out), wsdy(4 * rows * out);
  Linear lin(mode, in, out, rows, LinearWorkspace{wsw.data(), wsdy.data()});
  lin.add_adapter(r, s, true);
  lin.prepare_weight(f32_view(w, in, out));
  lin.prepare_adapter(f32_view(a, in, r), f32_view(b, r, out));
  std::vector<float> scratch(rows * in);
  float* xin = lin.input_buffer(scratch.data());
  std::copy(x.begin(), x.end(), xin);
  lin.commit_input(xin);
  std::vector<float> y(rows * out, NAN), dx(rows * in, NAN), dbias(out, NAN);
  lin.forward(y.data(), DType::kF32, bias.data());
  ScaledTensor frozen;  // no weight gradient
  for (int which = 0; which < 2; ++which)  // poisoned: the first backward overwrites them
    std::fill_n(static_cast<uint8_t*>(lin.adapter_grad(which == 1).data.data()),
                lin.adapter_grad(which == 1).data.bytes(), uint8_t{0x7f});
  lin.backward(dx.data(), dy.data(), frozen, dbias.data(), false);

  const auto X = wide(x), W = wide(w), A = wide(a), Bm = wide(b), DY = wide(dy);
  const auto U = matmul(X, A, rows, r, in);
  std::vector<double> Y = matmul(X, W, rows, out, in);
  const auto UB = matmul(U, Bm, rows, out, r);
  for (size_t i = 0; i < Y.size(); ++i) Y[i] += bias[i % out] + s * UB[i];
  std::vector<double> DU = matmul(DY, Bm, rows, r, out, false, true);
  for (double& v : DU) v *= s;
  std::vector<double> DX = matmul(DY, W, rows, in, out, false, true);
  const auto DXa = matmul(DU, A, rows, in, r, false, true);
  for (size_t i = 0; i < DX.size(); ++i) DX[i] += DXa[i];
  std::vector<double> DB = matmul(U, DY, r, out, rows, true);
  for (double& v : DB) v *= s;
  const auto DA = matmul(X, DU, in, r, rows, true);
  auto values = [](Linear& l, bool which) {
    std::vector<float> v(l.adapter_grad(which).data.numel());
    dequantize(v.data(), l.adapter_grad(which));
    return v;
  };
  EXPECT_LT(rel_err(y, Y), tol) << "y";
  EXPECT_LT(rel_err(dx, DX), tol) << "dx";
  EXPECT_LT(rel_err(values(lin, false), DA), tol) << "dA";
  EXPECT_LT(rel_err(values(lin, true), DB), tol) << "dB";

  // Accumulating a second backward doubles the adapter gradients.
  const std::vector<float> da1 = values(lin, false);
  lin.backward(dx.data(), dy.data(), frozen, dbias.data(), true);
  std::vector<double> twice(da1.begin(), da1.end());
  for (double& v : twice) v *= 2;
  EXPECT_LT(rel_err(values(lin, false), twice), mode == ComputeMode::kFP8 ? 0.07 : 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Modes, LoraLinear,
                         ::testing::Values(ModeCase{ComputeMode::kF32, 1e-5},
                                           ModeCase{ComputeMode::kBF16, 1e-2},
                                           ModeCase{ComputeMode::kFP8, 0.15}),
                         [](const auto& p) { return std::string(compute_mode_name(p.param.mode)); });

GptConfig tiny() {
  GptConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.seq_len = 8;
  c.vocab_size = 37;
  return c;
}

// The adapters' values, B non-zero unless `zero_b`.
std::vector<std::vector<float>> adapter_values(const std::vector<ParamSpec>& specs, bool zero_b) {
  std::vector<std::vector<float>> v;
  LoraInit init(7);
  uint32_t seed = 100;
  for (const ParamSpec& s : specs) {
    v.emplace_back(s.numel());
    init.next(s, v.back().data());
    if (s.name.ends_with("lora_b") && !zero_b) v.back() = normal(s.numel(), 0.05f, seed++);
  }
  return v;
}
std::vector<ScaledView> views(const std::vector<ParamSpec>& specs,
                              const std::vector<std::vector<float>>& v) {
  std::vector<ScaledView> out;
  for (size_t i = 0; i < specs.size(); ++i)
    out.push_back(f32_view(v[i], static_cast<size_t>(specs[i].shape[0]),
                           static_cast<size_t>(specs[i].shape[1])));
  return out;
}

TEST(LoraLayout, NamesShapesAndTargets) {
  LoraSpec l;
  l.rank = 4;
  l.targets = parse_lora_targets("attn.c_attn,mlp.c_proj");
  const auto specs = lora_layout(tiny(), l);
  ASSERT_EQ(specs.size(), 8u);
  EXPECT_EQ(specs[0].name, "h.0.attn.c_attn.lora_a");
  EXPECT_EQ(specs[0].shape, (Shape{16, 4}));
  EXPECT_EQ(specs[3].name, "h.0.mlp.c_proj.lora_b");
  EXPECT_EQ(specs[3].shape, (Shape{4, 16}));
  EXPECT_EQ(lora_targets_text(l.targets), "attn.c_attn,mlp.c_proj");
  EXPECT_EQ(parse_lora_targets("all"), kLoraAll);
  EXPECT_THROW(parse_lora_targets("attn.c_attn,attn.c_attn"), Error);
  EXPECT_THROW(parse_lora_targets("c_fc"), Error);
  EXPECT_THROW(parse_lora_targets(""), Error);
  l.rank = 17;  // more than the 16 of a 16-wide layer
  EXPECT_THROW(lora_layout(tiny(), l), Error);
}

TEST(LoraGpt, EqualsTheMergedModelAndItsChainRule) {
  const GptConfig cfg = tiny();
  GptParams base(cfg);
  base.init_gpt2(3);
  LoraSpec lora;
  lora.rank = 3;
  lora.alpha = 6;
  const size_t B = 2, T = 8;
  std::vector<int32_t> tok(B * T), tgt(B * T);
  std::mt19937 rng(5);
  for (size_t i = 0; i < B * T; ++i) {
    tok[i] = static_cast<int32_t>(rng() % 37);
    tgt[i] = static_cast<int32_t>(rng() % 37);
  }
  Gpt adapted(cfg, ComputeMode::kF32, B, T, {}, true, nullptr, nullptr, lora);
  const std::vector<ParamSpec>& as = adapted.trainable_specs();
  ASSERT_EQ(as.size(), 16u);  // 2 layers × 4 targets × (A, B)
  const auto av = adapter_values(as, false);
  adapted.set_weights(base.views());
  adapted.set_adapters(views(as, av));
  const float loss = adapted.forward_backward(tok.data(), tgt.data());

  // The merged model: W + s·A·B on each target.
  GptParams merged(cfg);
  std::copy(base.data(), base.data() + base.numel(), merged.data());
  const double s = lora.scale();
  auto spec_of = [&](const std::string& name) {
    for (size_t i = 0; i < merged.specs().size(); ++i)
      if (merged.specs()[i].name == name) return i;
    ADD_FAILURE() << "no " << name;
    return size_t{0};
  };
  for (size_t p = 0; p < as.size(); p += 2) {
    const std::string layer = as[p].name.substr(0, as[p].name.size() - 6);  // "h.L.<module>"
    const size_t w = spec_of(layer + "weight");
    const size_t in = static_cast<size_t>(as[p].shape[0]), out = static_cast<size_t>(as[p + 1].shape[1]);
    const auto ab = matmul(wide(av[p]), wide(av[p + 1]), in, out, 3);
    for (size_t i = 0; i < in * out; ++i) merged.at(w)[i] += static_cast<float>(s * ab[i]);
  }
  Gpt full(merged, ComputeMode::kF32, B, T);
  const float merged_loss = full.forward_backward(tok.data(), tgt.data());
  EXPECT_NEAR(loss, merged_loss, 1e-5 * std::fabs(merged_loss));
  for (size_t p = 0; p < as.size(); p += 2) {
    const std::string layer = as[p].name.substr(0, as[p].name.size() - 6);
    const size_t w = spec_of(layer + "weight");
    const size_t in = static_cast<size_t>(as[p].shape[0]), out = static_cast<size_t>(as[p + 1].shape[1]);
    std::vector<float> dw(in * out), da(in * 3), db(3 * out);
    full.grad_values(w, dw.data());
    adapted.grad_values(p, da.data());
    adapted.grad_values(p + 1, db.data());
    std::vector<double> want_a = matmul(wide(dw), wide(av[p + 1]), in, 3, out, false, true);
    std::vector<double> want_b = matmul(wide(av[p]), wide(dw), 3, out, in, true);
    for (double& v : want_a) v *= s;
    for (double& v : want_b) v *= s;
    EXPECT_LT(rel_err(da, want_a), 1e-4) << as[p].name;
    EXPECT_LT(rel_err(db, want_b), 1e-4) << as[p + 1].name;
  }
}

TEST(LoraGpt, StartsAsTheBaseAndTrainsOnlyTheAdaptersInEveryMode) {
  const GptConfig cfg = tiny();
  GptParams base(cfg);
  base.init_gpt2(4);
  LoraSpec lora;
  lora.rank = 2;
  const size_t B = 2, T = 8;
  std::vector<int32_t> tok(B * T), tgt(B * T);
  for (size_t i = 0; i < B * T; ++i) {
    tok[i] = static_cast<int32_t>((7 * i + 3) % 37);
    tgt[i] = static_cast<int32_t>((5 * i + 1) % 37);
  }
  std::vector<float> fp32_db;
  for (ComputeMode mode : {ComputeMode::kF32, ComputeMode::kBF16, ComputeMode::kFP8}) {
    SCOPED_TRACE(compute_mode_name(mode));
    Gpt plain(base, mode, B, T, {}, false);
    Gpt adapted(cfg, mode, B, T, {}, true, nullptr, nullptr, lora);
    const auto av = adapter_values(adapted.trainable_specs(), /*zero_b=*/true);
    adapted.set_weights(base.views());
    adapted.set_adapters(views(adapted.trainable_specs(), av));
    // B = 0: the adapted model is the base, to the bit.
    const float want = plain.forward(tok.data(), tgt.data());
    EXPECT_EQ(adapted.forward(tok.data(), tgt.data()), want);
    EXPECT_EQ(adapted.forward_backward(tok.data(), tgt.data()), want);
    EXPECT_EQ(adapted.grad_buffers().size(), adapted.trainable_specs().size());
    // With B = 0 the gradient reaches B only (dA = xᵀ·s·dy·Bᵀ = 0).
    std::vector<float> g;
    for (size_t i = 0; i < adapted.trainable_specs().size(); ++i) {
      g.resize(adapted.trainable_specs()[i].numel());
      adapted.grad_values(i, g.data());
      double norm = 0;
      for (float v : g) norm += static_cast<double>(v) * v;
      if (i % 2 == 0) EXPECT_EQ(norm, 0.0) << adapted.trainable_specs()[i].name;
      else EXPECT_GT(norm, 0.0) << adapted.trainable_specs()[i].name;
      if (i == 1 && mode == ComputeMode::kF32) fp32_db = g;
      if (i == 1 && mode != ComputeMode::kF32) {  // the narrow modes' dB near FP32's
        double dot = 0, na = 0, nb = 0;
        for (size_t k = 0; k < g.size(); ++k) {
          dot += static_cast<double>(g[k]) * fp32_db[k];
          na += static_cast<double>(g[k]) * g[k];
          nb += static_cast<double>(fp32_db[k]) * fp32_db[k];
        }
        EXPECT_GT(dot / std::sqrt(na * nb), 0.99);
      }
    }
  }
}

}  // namespace
}  // namespace fp8lm
