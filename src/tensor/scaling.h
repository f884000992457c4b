// Scaling (docs/numerics.md): ScalingRecipe says how a tensor is scaled per tensor,
// ScalingMeta carries that state (scale, scale_inv, amax history, counters); ScaledTensor owns
// a payload with its scales — per tensor (meta.scale_inv) or per block (a grid of scales) —
// and view() is the ScaledView every layer passes around.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "numerics/dtype.h"
#include "tensor/scaled_view.h"
#include "tensor/tensor.h"

namespace fp8lm {

enum class ScalingTiming : uint8_t {
  kJustInTime,  // amax of the tensor being cast, then cast (two passes)
  kDelayed,     // scale from the amax history of earlier casts (one pass)
};

struct ScalingRecipe {
  DType format = DType::kE4M3;  // e4m3, e5m2 or f16 (f32: optimizer states)
  ScalingTiming timing = ScalingTiming::kJustInTime;
  int window = 16;   // amax history length for delayed scaling
  int margin = 0;    // scale is lowered by 2^margin
  bool pow2 = true;  // power-of-two scales (exact); false: TE-style fmax / amax / 2^margin
  bool saturate = true;
};

// Largest finite value of a scaled format: 448 (e4m3), 57344 (e5m2), 65504 (f16); f32's.
float format_max(DType format);

// The scale rule. nullopt when amax is zero or not finite (callers keep their scale).
// Results are clamped to [2^-126, 2^126] so scale and scale_inv are both normal floats.
std::optional<float> compute_scale(float amax, float fmax, int margin, bool pow2);

struct ScalingMeta {
  ScalingRecipe recipe;
  float scale = 1.0f;
  float scale_inv = 1.0f;
  std::vector<float> amax_history;  // ring buffer of recorded amaxes, oldest overwritten
  int history_filled = 0;           // valid entries in amax_history
  int history_pos = 0;              // next slot to write
  bool jit_next = false;            // a non-finite amax was seen: next cast is just-in-time
  int64_t counter = 0;              // amaxes recorded (casts done)
  int64_t zero_amax = 0;            // casts whose amax was zero (scale kept)
  int64_t nonfinite_amax = 0;       // casts whose amax was inf/NaN (scale kept)

  explicit ScalingMeta(ScalingRecipe r = {});

  // True when the next cast must measure amax first: just-in-time recipes, and delayed
  // ones whose history is not full yet or that saw a non-finite amax.
  bool needs_jit() const;
  // Sets scale/scale_inv from amax (kept when amax is zero or not finite).
  void set_scale_from_amax(float amax);
  // Delayed scaling: sets the scale from the max over the history.
  void set_scale_from_history();
  // Records the amax of a finished cast: zero/non-finite are counted; finite ones enter
  // the history (non-finite ones never do, so one bad step cannot poison the window).
  void record_amax(float amax);
  // Largest finite amax in the history (0 when empty).
  float history_max() const;
};

struct ScaledTensor {
  Tensor data;  // payload in meta.recipe.format
  ScalingMeta meta;
  ScalingMode mode = ScalingMode::kTensor;
  Tensor scales;  // block modes: the grid of block scales (just-in-time, per cast)

  ScaledTensor() = default;
  // Per-tensor scaling following `recipe`.
  ScaledTensor(Shape shape, ScalingRecipe recipe, MemCategory category)
      : data(recipe.format, shape, category), meta(recipe) {}
  // Block scaling (a block mode); meta records the amax of each cast (not used to scale).
  ScaledTensor(Shape shape, DType format, ScalingMode block_mode, MemCategory category);

  // The live view: per tensor, its scale is meta.scale_inv itself. Writing the scale through
  // mut_view() (a collective) leaves meta.scale stale: payload readers use scale_inv only,
  // and the cast that next overwrites the payload sets the scale from its own amax.
  ScaledView view() const;
  MutableScaledView mut_view();
};

// A tensor split over ranks shares one scale: `share` turns this rank's amax into the
// group's (the max over the ranks holding its parts), so every rank derives the same scale
// and history, the one an unsplit tensor would have. Empty: the tensor is whole here.
using AmaxShare = std::function<float(float)>;

// Casts src (f32, same element count) into t: per tensor following t.meta's recipe, updating
// the meta; per block with just-in-time block scales (the amax is recorded in t.meta).
// Returns the amax of src (the group's, with `share`). `src_amax`, when given, is this rank's
// max |src| already known (e.g. from the GEMM that wrote src): a just-in-time cast then skips
// its own pass over src.
float quantize(ScaledTensor& t, const float* src, const AmaxShare& share = {},
               const float* src_amax = nullptr);
// The same into a caller's buffer of n elements in m.recipe.format (a payload that several
// tensors share in turn, each keeping its own scaling state).
float quantize(ScalingMeta& m, void* dst, const float* src, size_t n,
               const AmaxShare& share = {}, const float* src_amax = nullptr);
// dst = the values of t, in f32.
void dequantize(float* dst, const ScaledTensor& t);

}  // namespace fp8lm
