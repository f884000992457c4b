// The precision plan: what each precision level and each FP8 recipe means, one table each
// (docs/numerics.md). The Linear layers, AdamW, gradient averaging, O3's sharding,
// checkpoints and the configuration read these tables; the kernels see only the dtypes and
// block shapes they resolve to. A new level or recipe is a row here plus its tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "numerics/block_scales.h"
#include "numerics/dtype.h"
#include "tensor/scaling.h"

namespace fp8lm {

enum class PrecisionLevel : uint8_t { kFP32, kBF16, kO1, kO2, kO3 };

// The formats of a Linear layer's GEMM operands: fp32, bf16, or fp8 (x, W, dy as the recipe says).
enum class ComputeMode : uint8_t { kF32, kBF16, kFP8 };
std::string_view compute_mode_name(ComputeMode m);  // "fp32", "bf16", "fp8"

struct StateFormats {
  DType master, m1, m2, grad;  // grad: storage of the gradients the optimizer reads
};

struct LevelPlan {
  PrecisionLevel level;
  std::string_view name;
  ComputeMode compute;
  StateFormats states;
  DType grad_wire;  // data-parallel gradient average on the wire: f32, bf16 or e4m3 (FP8 all-reduce)
  bool sharded;     // FP8 ZeRO: each tensor's master and moments on one owner rank, gradients
                    // reduced to it, weights gathered from it
};

const LevelPlan& level_plan(PrecisionLevel l);
std::string_view level_name(PrecisionLevel l);
PrecisionLevel level_from_name(std::string_view name);  // throws Error listing the names

// Fine-grained scaling of the FP8 GEMM operands (none: per-tensor scales).
enum class FineScaling : uint8_t { kNone, kBlock, kMx };

struct RecipePlan {
  std::string_view name;
  ScalingTiming timing;  // per-tensor recipes: x and dy from the amax history, or just in time
  FineScaling fine;
  // Fine recipes: the block mode of each operand in each GEMM (stored coordinates; x and dy
  // are [rows, features], W is [in, out]): forward, input gradient, weight gradient.
  ScalingMode x_fwd, x_wgrad, w_fwd, w_dgrad, dy_dgrad, dy_wgrad;
  DType dy;  // the output gradient's format (mxfp8: e4m3 or e5m2 by precision.mx_grad_format)
  // How O3 replicates Linear weights (what owners quantize and gather): kTensor = E4M3 with
  // one scale, a block mode = E4M3 in those blocks with their scale grid (used by both of
  // W's GEMMs as they are), kNone = the FP16 master (each layer quantizes per GEMM: MX needs
  // W in two orientations, as many bytes as FP16).
  ScalingMode weight_replica;
};

const RecipePlan& recipe_plan(std::string_view name);  // throws Error listing the names
std::string recipe_names();                           // "delayed, jit, block or mxfp8"

}  // namespace fp8lm
