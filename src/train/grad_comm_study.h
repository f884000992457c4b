// The numerics lab's study of FP8 gradient communication (docs/experiments.md: grad-scaling,
// formats): N data-parallel ranks simulated in one process. Each step, a GPT with FP32
// GEMMs computes the gradients of N micro-batches (one per simulated rank, the windows a
// real rank r would draw); each rank casts its gradient to the FP8 format with its own
// just-in-time scale per tensor, as the model does at O2; the FP8 all-reduce's arithmetic
// (dist::Fp8GradReducer::allreduce_in_process, MPI's bit for bit at N = 2) averages them
// under each scaling mode; the result is compared with the exact mean of the FP32
// gradients. Rank counts are nested (N = 2 uses ranks 0–1 of the largest N), each
// (N, mode, format) keeps its own μ over the steps, and the model trains on the FP32 mean
// of the largest N, so every mode sees the same gradients.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "data/token_file.h"
#include "distributed/fp8_reduce.h"
#include "model/config.h"
#include "tensor/quant_stats.h"

namespace fp8lm {

struct GradCommStudy {
  GptConfig model;
  size_t batch = 1, seq = 64;  // per simulated rank
  std::vector<int> ranks = {2, 8, 32, 128};
  std::vector<dist::Fp8Scaling> modes;
  std::vector<DType> formats = {DType::kE4M3};
  dist::Fp8GradReducer::SumOrder order = dist::Fp8GradReducer::SumOrder::kRing;  // of the FP8 partial sums
  int steps = 20;
  float lr = 1e-3f;
  uint64_t seed = 1;
};

struct GradCommPoint {
  int step = 0;
  int ranks = 0;
  dist::Fp8Scaling mode = dist::Fp8Scaling::kAuto;
  DType format = DType::kE4M3;
  float multiplier = 1;  // m applied this step (auto: μ)
  // The averaged gradient of all tensors against the exact mean: underflow (non-zero
  // means that came out 0), saturated (exact sums beyond the format's max, clipped), SNR.
  QuantStats stats;
};

// Runs the study; `progress(step, mean loss of the micro-batches)` after each step.
// Throws Error for an empty or invalid setup (ranks < 1, formats other than E4M3/E5M2).
std::vector<GradCommPoint> run_grad_comm_study(
    const GradCommStudy& s, const TokenFile& train,
    const std::function<void(int step, double loss)>& progress = {});

}  // namespace fp8lm
