// The GPT model: FP32 against the FP64 reference model (whose gradients are checked by
// finite differences), FP8 and BF16 against FP32, determinism, accumulation, checkpoints.
#include "model/gpt.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/check.h"
#include "kernels/cast.h"
#include "model/ref_model.h"
#include "tensor/safetensors.h"

namespace fp8lm {
namespace {

GptConfig small_config() {
  GptConfig c;
  c.preset = "";
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.seq_len = 8;
  c.vocab_size = 37;  // padded to 64
  return c;
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};
Batch random_batch(size_t n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  Batch b{std::vector<int32_t>(n), std::vector<int32_t>(n)};
  for (size_t i = 0; i < n; ++i) {
    b.tokens[i] = d(rng);
    b.targets[i] = d(rng);
  }
  return b;
}

// Per-tensor comparison figures.
struct Cmp {
  double rel;     // max |a − b| / max |b|
  double cosine;  // <a, b> / (|a| |b|)
};
Cmp compare(const std::vector<float>& a, const ref::Vec& b) {
  double num = 0, na = 0, nb = 0, err = 0, mb = 1e-30;
  for (size_t i = 0; i < b.size(); ++i) {
    num += a[i] * b[i];
    na += static_cast<double>(a[i]) * a[i];
    nb += b[i] * b[i];
    err = std::max(err, std::fabs(a[i] - b[i]));
    mb = std::max(mb, std::fabs(b[i]));
  }
  return {err / mb, num / (std::sqrt(na * nb) + 1e-300)};
}

std::vector<float> grad(const Gpt& m, const GptParams& p, size_t spec) {
  std::vector<float> g(p.specs()[spec].numel());
  m.grad_values(spec, g.data());
  if (spec == 0) g.resize(static_cast<size_t>(p.config().vocab_size) * p.config().n_embd);
  return g;
}

// With the FP32 LM head and with the BF16 one (against the reference with its head's operands
// rounded to BF16, which it must match several times closer than the plain reference, so the
// comparison sees the rounding). Other LM head formats are refused.
TEST(GptModel, Fp32MatchesFp64ReferenceModel) {
  GptParams params(small_config());
  params.init_gpt2(1);
  const size_t B = 3, T = 8;
  const Batch batch = random_batch(B * T, 37, 2);
  const ref::RefModel plain(params);
  for (const DType head : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(head));
    Gpt model(params, ComputeMode::kF32, B, T);
    model.set_lm_head(head);
    EXPECT_EQ(model.lm_head(), head);
    const float loss = model.forward_backward(batch.tokens.data(), batch.targets.data());
    ref::RefModel rm(params);
    rm.bf16_head = head == DType::kBF16;
    std::vector<ref::Vec> rg, pg;
    const double rloss = rm.loss(batch.tokens, batch.targets, B, T, &rg);
    plain.loss(batch.tokens, batch.targets, B, T, &pg);
    EXPECT_NEAR(loss, rloss, 1e-5 * rloss);
    for (size_t s = 0; s < params.specs().size(); ++s) {
      const std::vector<float> g = grad(model, params, s);
      const Cmp c = compare(g, rg[s]);
      EXPECT_LT(c.rel, 1e-4) << params.specs()[s].name;
      if (s == 0 && rm.bf16_head) EXPECT_GT(compare(g, pg[s]).rel, 5 * c.rel) << "wte";
    }
    std::vector<float> logits(B * T * 37);
    model.logits(batch.tokens.data(), logits.data());
    const double rel = compare(logits, rm.logits(batch.tokens, B, T)).rel;
    EXPECT_LT(rel, 1e-5);
    if (rm.bf16_head) EXPECT_GT(compare(logits, plain.logits(batch.tokens, B, T)).rel, 5 * rel);
    EXPECT_THROW(model.set_lm_head(DType::kE4M3), Error);
  }
}

// Central differences of the FP64 reference model's loss, against both its own analytic
// gradient and the FP32 model's, for a sample of elements of every parameter tensor.
TEST(GptModel, GradientsMatchFiniteDifferencesInFp64) {
  GptParams params(small_config());
  params.init_gpt2(3);
  const size_t B = 2, T = 5;
  const Batch batch = random_batch(B * T, 37, 4);
  Gpt model(params, ComputeMode::kF32, B, T);
  model.forward_backward(batch.tokens.data(), batch.targets.data());
  ref::RefModel rm(params);
  std::vector<ref::Vec> rg;
  rm.loss(batch.tokens, batch.targets, B, T, &rg);
  std::mt19937 rng(5);
  for (size_t s = 0; s < rm.p.size(); ++s) {
    const std::vector<float> g32 = grad(model, params, s);
    std::uniform_int_distribution<size_t> pick(0, rm.p[s].size() - 1);
    for (int trial = 0; trial < 6; ++trial) {
      const size_t i = s == 0 ? static_cast<size_t>(batch.tokens[trial]) * 16 + pick(rng) % 16
                              : pick(rng);
      const double x0 = rm.p[s][i], h = 1e-5;
      rm.p[s][i] = x0 + h;
      const double lp = rm.loss(batch.tokens, batch.targets, B, T, nullptr);
      rm.p[s][i] = x0 - h;
      const double lm = rm.loss(batch.tokens, batch.targets, B, T, nullptr);
      rm.p[s][i] = x0;
      const double fd = (lp - lm) / (2 * h);
      const double tol = 1e-7 + 1e-5 * std::fabs(fd);
      EXPECT_NEAR(rg[s][i], fd, tol) << params.specs()[s].name << "[" << i << "] (FP64 model)";
      EXPECT_NEAR(g32[i], fd, 1e-6 + 1e-3 * std::fabs(fd))
          << params.specs()[s].name << "[" << i << "] (FP32 model)";
    }
  }
}

// fp8 and bf16 against fp32 on the same weights and batch (tiny preset, 4×64 tokens).
void compare_modes(ComputeMode mode, double loss_tol, double min_cosine, Fp8Options fp8 = {}) {
  GptParams params(gpt_preset("tiny"));
  params.init_gpt2(7);
  const size_t B = 4, T = 64;
  const Batch batch = random_batch(B * T, params.config().vocab_size, 8);
  Gpt ref32(params, ComputeMode::kF32, B, T), low(params, mode, B, T, fp8);
  const float l32 = ref32.forward_backward(batch.tokens.data(), batch.targets.data());
  // Two steps so delayed scaling has a history for the second (the first is just-in-time).
  low.forward_backward(batch.tokens.data(), batch.targets.data());
  const float l8 = low.forward_backward(batch.tokens.data(), batch.targets.data());
  const double loss_rel = std::fabs(l8 - l32) / l32;
  double worst = 1.0;
  std::string worst_name;
  for (size_t s = 0; s < params.specs().size(); ++s) {
    const std::vector<float> a = grad(low, params, s), b = grad(ref32, params, s);
    const Cmp c = compare(a, ref::Vec(b.begin(), b.end()));
    if (c.cosine < worst) {
      worst = c.cosine;
      worst_name = params.specs()[s].name;
    }
  }
  std::printf("%s vs fp32: loss %.6f vs %.6f (rel %.2e), min gradient cosine %.5f (%s)\n",
              std::string(compute_mode_name(mode)).c_str(), l8, l32, loss_rel, worst,
              worst_name.c_str());
  EXPECT_LT(loss_rel, loss_tol);
  EXPECT_GE(worst, min_cosine) << worst_name;
}

TEST(GptModel, Fp8MatchesFp32WithinTolerance) { compare_modes(ComputeMode::kFP8, 0.02, 0.99); }
TEST(GptModel, Bf16MatchesFp32WithinTolerance) { compare_modes(ComputeMode::kBF16, 0.01, 0.999); }
TEST(GptModel, Fp8BlockScalingMatchesFp32WithinTolerance) {
  compare_modes(ComputeMode::kFP8, 0.02, 0.99, fp8_options("block"));
}
TEST(GptModel, Fp8MxScalingMatchesFp32WithinTolerance) {
  compare_modes(ComputeMode::kFP8, 0.02, 0.99, fp8_options("mxfp8"));
  compare_modes(ComputeMode::kFP8, 0.02, 0.99, fp8_options("mxfp8", 16, 0, "e5m2"));
}

// The model on FP16+scale masters (what the trainer passes at O1/O2) computes bit for bit
// what it computes on their FP32 values: the weight casts happen while packing, with the
// same just-in-time scales. Evaluation (forward) leaves the delayed-scaling state alone.
TEST(GptModel, Fp8OnFp16MastersEqualsFp8OnTheirValues) {
  const GptConfig cfg = gpt_preset("tiny");
  GptParams init(cfg), values(cfg);
  init.init_gpt2(21);
  std::vector<std::vector<uint16_t>> f16(init.specs().size());
  std::vector<float> scale_inv(init.specs().size());
  std::vector<ScaledView> refs;
  for (size_t i = 0; i < init.specs().size(); ++i) {
    const size_t n = init.specs()[i].numel();
    const float amax = kernels::amax(init.at(i), n);
    const float scale = amax > 0 ? std::exp2(std::floor(std::log2(65504.0f / amax))) : 1.0f;
    f16[i].resize(n);
    kernels::quantize(f16[i].data(), DType::kF16, init.at(i), n, scale);
    kernels::dequantize(values.at(i), f16[i].data(), DType::kF16, n, 1.0f / scale);
    scale_inv[i] = 1.0f / scale;
    refs.push_back(tensor_view(static_cast<const void*>(f16[i].data()), DType::kF16,
                               init.specs()[i].shape, &scale_inv[i]));
  }
  const size_t B = 2, T = 32;
  const Batch batch = random_batch(B * T, cfg.vocab_size, 22);
  Gpt on_f16(cfg, ComputeMode::kFP8, B, T), on_f32(values, ComputeMode::kFP8, B, T);
  on_f16.set_weights(refs);
  for (int step = 0; step < 3; ++step) {
    if (step == 1) {  // an evaluation in between changes nothing
      on_f16.forward(batch.tokens.data(), batch.targets.data());
      on_f16.forward(batch.targets.data(), batch.tokens.data());
    }
    const float a = on_f16.forward_backward(batch.tokens.data(), batch.targets.data());
    const float b = on_f32.forward_backward(batch.tokens.data(), batch.targets.data());
    ASSERT_EQ(a, b) << "step " << step;
    for (size_t s = 0; s < init.specs().size(); ++s) {
      const auto ga = on_f16.grad(s), gb = on_f32.grad(s);
      ASSERT_EQ(ga.data.dtype, DType::kE4M3) << s;  // every O1/O2 gradient is stored as E4M3
      ASSERT_EQ(ga.tensor_scale(), gb.tensor_scale()) << s;
      ASSERT_EQ(std::memcmp(ga.data.data, gb.data.data, init.specs()[s].numel()), 0) << s;
    }
  }
}

// The logits of chosen positions are the bits of those rows of all the logits, in FP32 and
// FP8 (the LM head's rows are independent; chunking and scaling state do not enter).
TEST(GptModel, LogitsAtChosenRowsAreThoseRowsOfAll) {
  GptParams params(gpt_preset("tiny"));
  params.init_gpt2(8);
  const size_t B = 3, T = 16, V = static_cast<size_t>(params.config().vocab_size);
  const Batch batch = random_batch(B * T, params.config().vocab_size, 9);
  const std::vector<size_t> rows = {47, 0, 20, 20, 5};
  for (ComputeMode mode : {ComputeMode::kF32, ComputeMode::kFP8}) {
    Gpt m(params, mode, B, T, {}, false);
    std::vector<float> all(B * T * V), at(rows.size() * V, std::nanf(""));
    m.logits(batch.tokens.data(), all.data());
    m.logits_at(batch.tokens.data(), rows.data(), rows.size(), at.data());
    for (size_t i = 0; i < rows.size(); ++i)
      EXPECT_EQ(std::memcmp(at.data() + i * V, all.data() + rows[i] * V, V * sizeof(float)), 0)
          << compute_mode_name(mode) << " row " << rows[i];
    const size_t bad = B * T;
    EXPECT_THROW(m.logits_at(batch.tokens.data(), &bad, 1, at.data()), Error);
  }
}

// Weights decided inside forward_backward from its own losses (DPO, GRPO): every row is
// handed over once, in whole groups, with the losses forward() gives; the gradient is the
// weighted sum of the rows' gradients. Groups that fit a logits chunk (B = 4 pairs, B = 3
// rows) and one that outgrows it (B = 2 pairs: the loss-only pass), in FP32 against the
// FP64 reference model and in FP8 against weights fixed before the call.
TEST(GptModel, TokenWeightsAreDecidedFromTheForwardsOwnLosses) {
  GptParams params(small_config());
  params.init_gpt2(12);
  const size_t T = 8;
  // Each target's weight: a nonlinear function of its group's summed loss (a group's
  // losses all needed) and of its row.
  auto weigh = [](const float* losses, const int32_t* targets, size_t r0, size_t n, size_t group,
                  size_t row_len, float* w) {
    for (size_t g = r0; g < r0 + n; g += group) {
      double sum = 0;
      for (size_t i = g; i < g + group; ++i) sum += losses[i];
      for (size_t i = g; i < g + group; ++i)
        w[i] = targets[i] < 0
                   ? 0.0f
                   : static_cast<float>(0.05 * std::sin(sum + static_cast<double>(i / row_len)));
    }
  };
  struct Case {
    size_t B, group;
  };
  for (const Case c : {Case{4, 2 * T}, Case{3, T}, Case{2, 2 * T}})
    for (ComputeMode mode : {ComputeMode::kF32, ComputeMode::kFP8}) {
      const size_t B = c.B, BT = B * T;
      SCOPED_TRACE(std::string(compute_mode_name(mode)) + " B " + std::to_string(B) + " group " +
                   std::to_string(c.group));
      Batch batch = random_batch(BT, 37, 13);
      for (size_t i = 0; i < BT; i += 5) batch.targets[i] = -1;
      for (size_t i = T; i < 2 * T; ++i) batch.targets[i] = -1;  // a row without targets
      Gpt probe(params, mode, B, T);
      probe.forward(batch.tokens.data(), batch.targets.data());
      const std::vector<float> L(probe.token_losses(), probe.token_losses() + BT);
      std::vector<float> w(BT);
      weigh(L.data(), batch.targets.data(), 0, BT, c.group, T, w.data());

      Gpt decided(params, mode, B, T);
      size_t next = 0;
      decided.set_token_weight_fn(
          [&](size_t r0, size_t n, const float* losses, float* out) {
            EXPECT_EQ(r0, next);
            EXPECT_TRUE(n > 0 && n % c.group == 0) << n;
            next = r0 + n;
            EXPECT_EQ(std::memcmp(losses + r0, L.data() + r0, n * sizeof(float)), 0) << r0;
            weigh(losses, batch.targets.data(), r0, n, c.group, T, out);
          },
          c.group);
      const float loss = decided.forward_backward(batch.tokens.data(), batch.targets.data());
      EXPECT_EQ(next, BT);
      double want = 0;
      for (size_t i = 0; i < BT; ++i) want += L[i] * w[i];
      EXPECT_NEAR(loss, want, 1e-6);

      if (mode == ComputeMode::kF32) {  // Σ_t w_t ∇ℓ_t from the FP64 model, one row at a time
        const ref::RefModel rm(params);
        std::vector<ref::Vec> want_g;
        const ref::Vec w64(w.begin(), w.end());
        rm.loss(batch.tokens, batch.targets, B, T, &want_g, &w64);
        for (size_t s = 0; s < params.specs().size(); ++s)
          EXPECT_LT(compare(grad(decided, params, s), want_g[s]).rel, 1e-4)
              << params.specs()[s].name;
      } else {  // the same bits as the weights known before the call
        Gpt fixed(params, mode, B, T);
        fixed.set_token_weight_fn(
            [&](size_t r0, size_t n, const float*, float* out) {
              std::memcpy(out + r0, w.data() + r0, n * sizeof(float));
            },
            c.group);
        fixed.forward_backward(batch.tokens.data(), batch.targets.data());
        for (size_t s = 0; s < params.specs().size(); ++s)
          EXPECT_EQ(grad(decided, params, s), grad(fixed, params, s)) << params.specs()[s].name;
      }
    }
  Gpt m(params, ComputeMode::kF32, 3, T);
  EXPECT_THROW(m.set_token_weight_fn([](size_t, size_t, const float*, float*) {}, 2 * T), Error);
}

// The LM head runs for the rows that have a target only (fine-tuning's prompts and padding
// have none): their losses are the bits of a batch where every row has one, the gradient
// the FP64 model's with the others ignored, and a batch without targets gives loss 0 and a
// zero gradient (every row still handed to a token-weight function).
TEST(GptModel, TheLmHeadRunsForRowsWithTargetsOnly) {
  GptParams params(small_config());
  params.init_gpt2(16);
  const size_t B = 4, T = 8, BT = B * T;
  const Batch all = random_batch(BT, 37, 17);
  Batch some = all;
  for (size_t i = 0; i < BT; ++i)
    if (!(i == 3 || i == 4 || i == 21 || (i >= 28 && i < 31))) some.targets[i] = -1;
  for (ComputeMode mode : {ComputeMode::kF32, ComputeMode::kFP8}) {
    SCOPED_TRACE(compute_mode_name(mode));
    Gpt full(params, mode, B, T, {}, false), m(params, mode, B, T);
    full.forward(all.tokens.data(), all.targets.data());
    const float loss = m.forward_backward(some.tokens.data(), some.targets.data());
    double want = 0;
    for (size_t i = 0; i < BT; ++i) {
      if (some.targets[i] < 0) {
        EXPECT_EQ(m.token_losses()[i], 0.0f) << i;
        continue;
      }
      EXPECT_EQ(m.token_losses()[i], full.token_losses()[i]) << i;
      want += m.token_losses()[i];
    }
    EXPECT_FLOAT_EQ(loss, static_cast<float>(want / BT));
    if (mode == ComputeMode::kF32) {
      const ref::RefModel rm(params);
      std::vector<ref::Vec> rg;
      EXPECT_NEAR(rm.loss(some.tokens, some.targets, B, T, &rg), loss, 1e-5);
      for (size_t s = 0; s < params.specs().size(); ++s)
        EXPECT_LT(compare(grad(m, params, s), rg[s]).rel, 1e-4) << params.specs()[s].name;
    }
    std::vector<int32_t> none(BT, -1);
    EXPECT_EQ(m.forward_backward(some.tokens.data(), none.data()), 0.0f);
    for (size_t s = 0; s < params.specs().size(); ++s)
      for (float g : grad(m, params, s)) ASSERT_EQ(g, 0.0f) << params.specs()[s].name;
    size_t handed = 0;
    m.set_token_weight_fn(
        [&](size_t r0, size_t n, const float*, float*) {
          EXPECT_EQ(r0, handed);
          handed += n;
        },
        2 * T);
    m.forward_backward(some.tokens.data(), none.data());
    EXPECT_EQ(handed, BT);
  }
}

// A model without gradients keeps one block's activations and passes them along the blocks:
// the same losses and logits as a model with gradients, again after an input error, and its
// activation memory L − 1 blocks smaller.
TEST(GptModel, WithoutGradientsOneBlocksActivationsArePassedAlong) {
  GptConfig cfg = small_config();
  cfg.n_layer = 3;
  GptParams params(cfg);
  params.init_gpt2(14);
  const size_t B = 2, T = 8, L = 3, C = 16, BT = B * T;
  const Batch batch = random_batch(BT, 37, 15);
  struct Mode {
    ComputeMode mode;
    Fp8Options fp8;
  };
  for (const Mode& m :
       {Mode{ComputeMode::kF32, {}}, Mode{ComputeMode::kBF16, {}}, Mode{ComputeMode::kFP8, {}},
        Mode{ComputeMode::kFP8, fp8_options("block")}}) {
    SCOPED_TRACE(compute_mode_name(m.mode));
    Gpt full(params, m.mode, B, T, m.fp8);
    Gpt light(params, m.mode, B, T, m.fp8, /*with_grads=*/false);
    const float want = full.forward(batch.tokens.data(), batch.targets.data());
    const std::vector<float> want_losses(full.token_losses(), full.token_losses() + BT);
    std::vector<float> want_logits(BT * 37), logits(BT * 37);
    full.logits(batch.tokens.data(), want_logits.data());
    for (int round = 0; round < 2; ++round) {
      EXPECT_EQ(light.forward(batch.tokens.data(), batch.targets.data()), want);
      EXPECT_EQ(std::memcmp(light.token_losses(), want_losses.data(), BT * sizeof(float)), 0);
      light.logits(batch.tokens.data(), logits.data());
      EXPECT_EQ(logits, want_logits);
      std::vector<int32_t> bad = batch.tokens;
      bad[3] = 37;
      EXPECT_THROW(light.forward(bad.data(), batch.targets.data()), Error);
    }
    // Activations outside the blocks: the last residual and ln_f (FP32), ln_f's mean and rstd.
    const size_t outside = 2 * BT * C * sizeof(float) + 2 * BT * sizeof(float);
    const size_t block = light.activation_bytes() - outside;
    EXPECT_EQ(full.activation_bytes(), L * block + outside);
  }
}

TEST(GptModel, DeterministicAndAccumulating) {
  GptParams params(small_config());
  params.init_gpt2(9);
  const size_t B = 2, T = 8;
  const Batch b1 = random_batch(B * T, 37, 10), b2 = random_batch(B * T, 37, 11);
  Gpt m(params, ComputeMode::kF32, B, T);
  const float la = m.forward_backward(b1.tokens.data(), b1.targets.data());
  const auto g_a = grad(m, params, 4);
  const float lb = m.forward_backward(b1.tokens.data(), b1.targets.data());
  EXPECT_EQ(la, lb);
  EXPECT_EQ(g_a, grad(m, params, 4));
  m.forward_backward(b2.tokens.data(), b2.targets.data());
  const auto g_b = grad(m, params, 4);
  m.forward_backward(b1.tokens.data(), b1.targets.data());
  m.forward_backward(b2.tokens.data(), b2.targets.data(), /*accumulate=*/true);
  const auto g_sum = grad(m, params, 4);
  for (size_t i = 0; i < g_sum.size(); ++i)
    ASSERT_NEAR(g_sum[i], g_a[i] + g_b[i], 1e-6 * (1 + std::fabs(g_sum[i])));
}

TEST(GptModel, SaveLoadRoundTripAndErrors) {
  const std::string dir = ::testing::TempDir() + "/fp8lm_gpt_io_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  GptParams a(small_config());
  a.init_gpt2(12);
  a.save(dir + "/model.safetensors");
  {
    const SafetensorsFile f(dir + "/model.safetensors");
    EXPECT_EQ(f.find("wte.weight")->view.shape, (Shape{37, 16}));  // unpadded on disk
    EXPECT_EQ(f.find("h.1.mlp.c_fc.weight")->view.shape, (Shape{16, 64}));
  }
  GptParams b(small_config());
  b.load(dir + "/model.safetensors");
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)), 0);
  GptConfig other = small_config();
  other.n_embd = 32;
  GptParams c(other);
  try {
    c.load(dir + "/model.safetensors");
    FAIL() << "loaded a checkpoint of another shape";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("wte.weight has shape [37, 16]"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(gpt_preset("gpt3"), Error);
  Gpt m(a, ComputeMode::kF32, 1, 8);
  std::vector<int32_t> bad(8, 0);
  bad[3] = 37;
  EXPECT_THROW(m.forward(bad.data(), bad.data()), Error);
}

}  // namespace
}  // namespace fp8lm
