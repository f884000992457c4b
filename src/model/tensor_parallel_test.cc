// Tensor parallelism inside one process: the ranks of a group are threads whose collectives
// meet in shared memory, so a sharded Gpt is checked against the whole one without MPI.
// Each rank's loss must be the one-process loss and its gradients its shards of the
// one-process gradients; logits() must gather the whole vocabulary; in fp8 mode the shards
// of a tensor must derive one scale.
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <tuple>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "core/parallel.h"
#include "kernels/cast.h"
#include "model/gpt.h"
#include "model/params.h"
#include "model/tensor_parallel.h"

namespace fp8lm {
namespace {

// The group's meeting point: every rank posts its buffer, all read all, then each writes
// its own result (two barriers: nobody writes before everybody has read).
struct Meeting {
  explicit Meeting(int n) : size(n), sync(n), in(static_cast<size_t>(n)) {}
  int size;
  std::barrier<> sync;
  std::vector<const float*> in;
};

class ThreadTpComm final : public TpComm {
 public:
  ThreadTpComm(Meeting& m, int rank, TpOptions options) : m_(m), rank_(rank), options_(options) {}
  TpShard shard() const override { return {rank_, m_.size}; }
  TpOptions options() const override { return options_; }
  int scaling_ranks() const override { return m_.size; }
  float max_amax(float a) override {
    allreduce_max(&a, 1);
    return a;
  }
  void allreduce_sum(float* x, size_t n) override {
    combine(x, n, [](float a, float b) { return a + b; });
  }
  void allreduce_max(float* x, size_t n) override {
    combine(x, n, [](float a, float b) { return std::max(a, b); });
  }
  void allgather(const float* in, float* out, size_t n) override {
    m_.in[static_cast<size_t>(rank_)] = in;
    m_.sync.arrive_and_wait();
    for (int r = 0; r < m_.size; ++r)
      std::copy(m_.in[static_cast<size_t>(r)], m_.in[static_cast<size_t>(r)] + n,
                out + static_cast<size_t>(r) * n);
    m_.sync.arrive_and_wait();
  }
  void allgather_parts(void* base, size_t bytes, DType) override {
    m_.in[static_cast<size_t>(rank_)] = static_cast<const float*>(base);
    m_.sync.arrive_and_wait();
    std::vector<uint8_t> all(bytes * static_cast<size_t>(m_.size));
    for (int r = 0; r < m_.size; ++r) {
      const auto* part = reinterpret_cast<const uint8_t*>(m_.in[static_cast<size_t>(r)]) +
                         static_cast<size_t>(r) * bytes;
      std::copy(part, part + bytes, all.begin() + static_cast<long>(static_cast<size_t>(r) * bytes));
    }
    m_.sync.arrive_and_wait();
    std::copy(all.begin(), all.end(), static_cast<uint8_t*>(base));
  }
  // BF16: each rank's values rounded to BF16, partial sums rounded to BF16, in rank order.
  void reduce_scatter(const float* in, float* out, size_t n, DType wire) override {
    m_.in[static_cast<size_t>(rank_)] = in;
    m_.sync.arrive_and_wait();
    auto round = [wire](float v) { return wire == DType::kBF16 ? bf16(v) : v; };
    std::vector<float> sum(n);
    const size_t off = static_cast<size_t>(rank_) * n;
    for (size_t i = 0; i < n; ++i) {
      float acc = round(m_.in[0][off + i]);
      for (int r = 1; r < m_.size; ++r) acc = round(acc + round(m_.in[static_cast<size_t>(r)][off + i]));
      sum[i] = acc;
    }
    m_.sync.arrive_and_wait();
    std::copy(sum.begin(), sum.end(), out);
  }

 private:
  static float bf16(float v) {
    uint16_t h;
    kernels::quantize(&h, DType::kBF16, &v, 1, 1.0f, false);
    float back;
    kernels::dequantize(&back, &h, DType::kBF16, 1, 1.0f);
    return back;
  }
  void combine(float* x, size_t n, const std::function<float(float, float)>& op) {
    m_.in[static_cast<size_t>(rank_)] = x;
    m_.sync.arrive_and_wait();
    std::vector<float> out(m_.in[0], m_.in[0] + n);  // ranks in order: every rank alike
    for (int r = 1; r < m_.size; ++r)
      for (size_t i = 0; i < n; ++i) out[i] = op(out[i], m_.in[static_cast<size_t>(r)][i]);
    m_.sync.arrive_and_wait();
    std::copy(out.begin(), out.end(), x);
  }
  Meeting& m_;
  int rank_;
  TpOptions options_;
};

constexpr size_t kB = 2, kT = 16;

GptConfig config() {
  GptConfig c = gpt_preset("tiny");
  c.n_head = 4;        // head size 16; 1, 2 or 4 ranks
  c.vocab_size = 500;  // padded to 512: the last rank's shard holds padding rows
  return c;
}

std::vector<int32_t> tokens(size_t n, uint32_t seed, int vocab) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i)
    t[i] = static_cast<int32_t>((i * 7919u + seed * 104729u) % static_cast<uint32_t>(vocab));
  return t;
}

struct RankResult {
  float loss = 0;
  std::vector<std::vector<float>> grads;  // per spec, this rank's shard
  std::vector<float> logits;              // [B·T, V], gathered
  std::vector<float> scales;              // fp8: every scaling state's scale, in order
};

// Runs `tp` ranks (threads) of a sharded model on the shards of `full`.
std::vector<RankResult> run_sharded(const GptParams& full, int tp, ComputeMode mode,
                                    const std::vector<int32_t>& in,
                                    const std::vector<int32_t>& tgt, TpOptions options) {
  const GptConfig cfg = full.config();
  Meeting meeting(tp);
  std::vector<RankResult> out(static_cast<size_t>(tp));
  std::vector<std::thread> threads;
  for (int r = 0; r < tp; ++r)
    threads.emplace_back([&, r] {
      set_num_threads(1);
      ThreadTpComm comm(meeting, r, options);
      const TpShard shard{r, tp};
      const std::vector<ParamSpec> specs = param_layout(cfg, shard);
      std::vector<std::vector<float>> local(specs.size());
      std::vector<ScaledView> views;
      for (size_t i = 0; i < specs.size(); ++i) {
        local[i].resize(specs[i].numel());
        extract_shard(specs[i], shard, full.at(i), local[i].data(), sizeof(float));
        views.push_back(tensor_view(static_cast<const void*>(local[i].data()), DType::kF32,
                                    specs[i].shape, nullptr));
      }
      Gpt model(cfg, mode, kB, kT, {}, true, &comm);
      model.set_weights(views);
      RankResult& res = out[static_cast<size_t>(r)];
      // Two micro-batches: the second accumulates (LayerNorm gradients counted once).
      model.forward_backward(tgt.data(), in.data());
      res.loss = model.forward_backward(in.data(), tgt.data(), /*accumulate=*/true);
      for (size_t i = 0; i < specs.size(); ++i) {
        res.grads.emplace_back(specs[i].numel());
        model.grad_values(i, res.grads.back().data());
      }
      for (ScalingMeta* m : model.scaling_metas()) res.scales.push_back(m->scale);
      res.logits.resize(kB * kT * static_cast<size_t>(cfg.vocab_size));
      model.logits(in.data(), res.logits.data());
    });
  for (std::thread& t : threads) t.join();
  return out;
}

// (ranks, sequence parallelism)
class TensorParallel : public ::testing::TestWithParam<std::tuple<int, bool>> {
 protected:
  int tp() const { return std::get<0>(GetParam()); }
  TpOptions options(DType wire = DType::kF32) const {
    TpOptions o;
    o.sequence = std::get<1>(GetParam());
    o.wire = wire;
    return o;
  }
  // The whole model on `mode` after two micro-batches (the second accumulated): its loss.
  float run_one(ComputeMode mode) {
    set_num_threads(1);
    one = std::make_unique<Gpt>(full, mode, kB, kT);
    one->forward_backward(tgt.data(), in.data());
    return one->forward_backward(in.data(), tgt.data(), true);
  }
  // The one-process gradient of parameter i, cut to rank r's shard.
  std::vector<float> one_grad_shard(size_t i, int r) const {
    const ParamSpec spec = param_layout(cfg, {r, tp()})[i];
    std::vector<float> g(one->specs()[i].numel()), want(spec.numel());
    one->grad_values(i, g.data());
    extract_shard(spec, {r, tp()}, g.data(), want.data(), sizeof(float));
    return want;
  }

  const GptConfig cfg = config();
  GptParams full = [this] {
    GptParams p(cfg);
    p.init_gpt2(7);
    return p;
  }();
  const std::vector<int32_t> in = tokens(kB * kT, 1, cfg.vocab_size);
  const std::vector<int32_t> tgt = tokens(kB * kT, 2, cfg.vocab_size);
  std::unique_ptr<Gpt> one;
};

TEST_P(TensorParallel, Fp32ShardsEqualTheOneProcessModel) {
  const int tp = this->tp();
  const float loss = run_one(ComputeMode::kF32);
  std::vector<float> logits(kB * kT * static_cast<size_t>(cfg.vocab_size));
  one->logits(in.data(), logits.data());

  const auto ranks = run_sharded(full, tp, ComputeMode::kF32, in, tgt, options());
  for (int r = 0; r < tp; ++r) {
    const RankResult& res = ranks[static_cast<size_t>(r)];
    EXPECT_NEAR(res.loss, loss, 1e-6 * std::fabs(loss)) << "rank " << r;
    const std::vector<ParamSpec> specs = param_layout(cfg, {r, tp});
    for (size_t i = 0; i < specs.size(); ++i) {
      const std::vector<float> want = one_grad_shard(i, r);
      float top = 0, worst = 0;
      for (size_t k = 0; k < want.size(); ++k) {
        top = std::max(top, std::fabs(want[k]));
        worst = std::max(worst, std::fabs(res.grads[i][k] - want[k]));
      }
      EXPECT_LE(worst, 1e-5f * top + 1e-9f) << specs[i].name << " rank " << r;
    }
    float worst = 0;
    for (size_t k = 0; k < logits.size(); ++k)
      worst = std::max(worst, std::fabs(res.logits[k] - logits[k]));
    EXPECT_LE(worst, 1e-5f) << "logits, rank " << r;
  }
}

TEST_P(TensorParallel, Fp8ShardsShareTheirScales) {
  const int tp = this->tp();
  const float loss = run_one(ComputeMode::kFP8);
  std::vector<float> one_scales;
  for (ScalingMeta* m : one->scaling_metas()) one_scales.push_back(m->scale);

  const auto ranks = run_sharded(full, tp, ComputeMode::kFP8, in, tgt, options());
  for (int r = 0; r < tp; ++r) {
    const RankResult& res = ranks[static_cast<size_t>(r)];
    EXPECT_NEAR(res.loss, loss, 1e-3 * std::fabs(loss)) << "rank " << r;
    // Every rank derives the one-process scales (the amaxes of the split x and dy are the
    // max over the shards, which is the whole tensor's).
    EXPECT_EQ(res.scales, one_scales) << "rank " << r;
    // Gradients (E4M3): each shard within E4M3's error of the one-process shard, in norm; a
    // part summed over too few or too many ranks' rows would be off by ≥ 1/tp.
    const std::vector<ParamSpec> specs = param_layout(cfg, {r, tp});
    for (size_t i = 0; i < specs.size(); ++i) {
      const std::vector<float> want = one_grad_shard(i, r);
      double err = 0, norm = 0;
      for (size_t k = 0; k < want.size(); ++k) {
        err += std::pow(res.grads[i][k] - want[k], 2.0);
        norm += std::pow(want[k], 2.0);
      }
      EXPECT_LE(std::sqrt(err), 0.1 * std::sqrt(norm) + 1e-12) << specs[i].name << " rank " << r;
    }
  }
  // BF16 on the wire and the BF16 gather baseline: the same loss within BF16's rounding.
  TpOptions bf16 = options(DType::kBF16);
  bf16.gather_bf16 = true;
  for (const TpOptions& o : {options(DType::kBF16), bf16}) {
    const auto approx = run_sharded(full, tp, ComputeMode::kFP8, in, tgt, o);
    for (int r = 0; r < tp; ++r) {
      EXPECT_NEAR(approx[static_cast<size_t>(r)].loss, loss, 1e-2 * std::fabs(loss)) << "rank " << r;
      EXPECT_EQ(approx[static_cast<size_t>(r)].loss, approx[0].loss);  // every rank alike
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, TensorParallel,
                         ::testing::Combine(::testing::Values(2, 4), ::testing::Bool()));

TEST(TensorParallelLayout, ShardsTileEveryTensorAndBadSplitsAreRefused) {
  const GptConfig cfg = config();
  const std::vector<ParamSpec> whole = param_layout(cfg);
  for (int tp : {1, 2, 4}) {
    const auto specs0 = param_layout(cfg, {0, tp});
    ASSERT_EQ(specs0.size(), whole.size());
    for (size_t i = 0; i < whole.size(); ++i) {
      std::vector<float> full(whole[i].numel()), back(whole[i].numel(), -1.0f);
      for (size_t k = 0; k < full.size(); ++k) full[k] = static_cast<float>(k);
      size_t covered = 0;
      for (int r = 0; r < tp; ++r) {
        const ParamSpec s = param_layout(cfg, {r, tp})[i];
        EXPECT_EQ(s.full_shape, whole[i].shape) << s.name;
        std::vector<float> shard(s.numel());
        extract_shard(s, {r, tp}, full.data(), shard.data(), sizeof(float));
        place_shard(s, {r, tp}, shard.data(), back.data(), sizeof(float));
        covered += s.split == Split::kNone ? (r == 0 ? s.numel() : 0) : s.numel();
      }
      EXPECT_EQ(back, full) << whole[i].name << " tp " << tp;
      EXPECT_EQ(covered, whole[i].numel()) << whole[i].name << " tp " << tp;
    }
  }
  // c_attn's shard of rank 1 at tp 2 is [q heads 2-3 | k heads 2-3 | v heads 2-3].
  const ParamSpec attn = param_layout(cfg, {1, 2})[4];
  ASSERT_EQ(attn.name, "h.0.attn.c_attn.weight");
  const size_t C = static_cast<size_t>(cfg.n_embd);
  std::vector<float> full(3 * C * C), shard(attn.numel());
  for (size_t k = 0; k < full.size(); ++k) full[k] = static_cast<float>(k);
  extract_shard(attn, {1, 2}, full.data(), shard.data(), sizeof(float));
  EXPECT_EQ(shard[0], static_cast<float>(C / 2));          // q, first column of rank 1
  EXPECT_EQ(shard[C / 2], static_cast<float>(C + C / 2));  // k
  EXPECT_EQ(shard[C], static_cast<float>(2 * C + C / 2));  // v
  EXPECT_THROW(param_layout(cfg, {0, 3}), Error);          // 4 heads
  GptConfig odd = cfg;  // 3 heads divide, the padded vocabulary (512) does not
  odd.n_embd = 48;
  odd.n_head = 3;
  EXPECT_THROW(param_layout(odd, {0, 3}), Error);
}

// Pipeline stages (docs/parallelism.md): contiguous layers, earlier stages one more when the
// stages do not divide them; every tensor on exactly one stage but the tied wte (first and
// last); fewer layers than stages is an error.
TEST(PipelineLayout, StagesTileTheLayersAndTheTiedWteIsOnBothEnds) {
  GptConfig cfg = config();
  cfg.n_layer = 5;
  const std::vector<ParamSpec> whole = param_layout(cfg);
  for (int pp : {1, 2, 3, 5}) {
    std::map<std::string, int> holders;
    int next = 0;
    for (int st = 0; st < pp; ++st) {
      const auto [l0, l1] = stage_layers(cfg, {st, pp});
      EXPECT_EQ(l0, next);
      EXPECT_GE(l1 - l0, cfg.n_layer / pp);
      EXPECT_LE(l1 - l0, cfg.n_layer / pp + 1);
      next = l1;
      size_t offset = 0;
      for (const ParamSpec& s : param_layout(cfg, {}, {st, pp})) {
        ++holders[s.name];
        EXPECT_EQ(s.offset, offset) << s.name;  // packed per stage
        offset += s.numel();
        if (s.name.starts_with("h.")) {
          const int l = std::stoi(s.name.substr(2));
          EXPECT_TRUE(l >= l0 && l < l1) << s.name << " on stage " << st;
        }
      }
    }
    EXPECT_EQ(next, cfg.n_layer);
    ASSERT_EQ(holders.size(), whole.size());
    for (const ParamSpec& s : whole)
      EXPECT_EQ(holders[s.name], s.name == "wte.weight" && pp > 1 ? 2 : 1) << s.name << " pp " << pp;
  }
  EXPECT_EQ(stage_layers(cfg, {0, 2}), std::make_pair(0, 3));
  EXPECT_EQ(stage_layers(cfg, {1, 2}), std::make_pair(3, 5));
  EXPECT_THROW(param_layout(cfg, {}, {0, 6}), Error);  // 5 layers
}

}  // namespace
}  // namespace fp8lm
