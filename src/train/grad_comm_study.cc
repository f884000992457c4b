// N data-parallel ranks' FP8 gradient averaging simulated in one process (train/grad_comm_study.h).
#include "train/grad_comm_study.h"

#include <algorithm>
#include <map>
#include <memory>
#include <tuple>

#include "core/check.h"
#include "data/loader.h"
#include "model/gpt.h"
#include "train/gpt_state.h"

namespace fp8lm {

std::vector<GradCommPoint> run_grad_comm_study(
    const GradCommStudy& s, const TokenFile& train,
    const std::function<void(int step, double loss)>& progress) {
  if (s.ranks.empty() || s.modes.empty() || s.formats.empty())
    fail("grad study: no rank counts, modes or formats");
  for (int n : s.ranks)
    if (n < 1) fail("grad study: rank count ", n, " (must be ≥ 1)");
  for (DType f : s.formats)
    if (f != DType::kE4M3 && f != DType::kE5M2)
      fail("grad study: gradient format ", dtype_name(f), " (must be e4m3 or e5m2)");
  if (s.steps < 1) fail("grad study: steps = ", s.steps);
  std::vector<int> ranks = s.ranks;
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  const int n_max = ranks.back();

  std::unique_ptr<AdamW> opt = make_gpt_optimizer(s.model, PrecisionLevel::kFP32, {}, s.seed);
  Gpt model(s.model, ComputeMode::kF32, s.batch, s.seq);
  model.set_weights(master_views(*opt));
  const std::vector<ParamSpec>& specs = model.specs();
  const size_t P = specs.size();

  // Each simulated rank's FP8 gradients, per format; the exact running sum over ranks.
  std::vector<std::vector<std::vector<ScaledTensor>>> codes(s.formats.size());
  for (size_t f = 0; f < s.formats.size(); ++f)
    for (int r = 0; r < n_max; ++r) {
      codes[f].emplace_back();
      for (const ParamSpec& p : specs)
        codes[f].back().emplace_back(p.shape,
                                     ScalingRecipe{s.formats[f], ScalingTiming::kJustInTime},
                                     MemCategory::kGradients);
    }
  std::vector<std::vector<double>> sum(P);
  std::vector<std::vector<float>> grad(P), mean(P);
  for (size_t t = 0; t < P; ++t) {
    sum[t].resize(specs[t].numel());
    grad[t].resize(specs[t].numel());
    mean[t].resize(specs[t].numel());
  }
  // The averaged result per format, and one reducer (its μ) per (N, mode, format).
  std::vector<std::vector<ScaledTensor>> result(s.formats.size());
  for (size_t f = 0; f < s.formats.size(); ++f)
    for (const ParamSpec& p : specs)
      result[f].emplace_back(p.shape, ScalingRecipe{s.formats[f], ScalingTiming::kJustInTime},
                             MemCategory::kGradients);
  std::map<std::tuple<int, size_t, size_t>, dist::Fp8GradReducer> reducers;
  for (int n : ranks)
    for (size_t m = 0; m < s.modes.size(); ++m)
      for (size_t f = 0; f < s.formats.size(); ++f)
        reducers.emplace(std::tuple{n, m, f}, dist::Fp8GradReducer(s.modes[m]));

  std::vector<DataLoader> loaders;
  for (int r = 0; r < n_max; ++r) loaders.emplace_back(train, s.batch, s.seq, s.seed, r);
  std::vector<int32_t> tokens(s.batch * s.seq), targets(s.batch * s.seq);
  std::vector<GradCommPoint> points;
  for (int step = 0; step < s.steps; ++step) {
    for (auto& v : sum) std::fill(v.begin(), v.end(), 0.0);
    double loss = 0;
    for (int r = 0; r < n_max; ++r) {
      loaders[static_cast<size_t>(r)].train_batch(step, tokens.data(), targets.data());
      loss += model.forward_backward(tokens.data(), targets.data());
      for (size_t t = 0; t < P; ++t) {
        model.grad_values(t, grad[t].data());
        for (size_t i = 0; i < grad[t].size(); ++i) sum[t][i] += grad[t][i];
        for (size_t f = 0; f < s.formats.size(); ++f)
          quantize(codes[f][static_cast<size_t>(r)][t], grad[t].data());
      }
      const int n = r + 1;
      if (!std::binary_search(ranks.begin(), ranks.end(), n)) continue;
      for (size_t t = 0; t < P; ++t)
        for (size_t i = 0; i < sum[t].size(); ++i)
          mean[t][i] = static_cast<float>(sum[t][i] / n);
      for (size_t f = 0; f < s.formats.size(); ++f) {
        std::vector<std::vector<ScaledView>> in(static_cast<size_t>(n));
        for (int q = 0; q < n; ++q)
          for (const ScaledTensor& g : codes[f][static_cast<size_t>(q)]) in[static_cast<size_t>(q)].push_back(g.view());
        std::vector<MutableScaledView> out;
        for (ScaledTensor& g : result[f]) out.push_back(g.mut_view());
        for (size_t m = 0; m < s.modes.size(); ++m) {
          dist::Fp8GradReducer& red = reducers.at({n, m, f});
          const dist::Fp8ReduceStats rs = red.allreduce_in_process(in, out, s.order);
          GradCommPoint p{step, n, s.modes[m], s.formats[f], n > 1 ? rs.multiplier : 1.0f, {}};
          for (size_t t = 0; t < P; ++t)
            p.stats = merge(p.stats, quant_stats(mean[t].data(), result[f][t].view()));
          points.push_back(p);
        }
      }
    }
    // The model trains on the exact mean of the largest N (mean holds it now).
    std::vector<ScaledView> g;
    for (size_t t = 0; t < P; ++t)
      g.push_back(tensor_view(static_cast<const void*>(mean[t].data()), DType::kF32,
                              specs[t].shape, nullptr));
    opt->step(g, s.lr, 1.0f, 1.0f);
    if (progress) progress(step, loss / n_max);
  }
  return points;
}

}  // namespace fp8lm
