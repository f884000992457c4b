// The 3-D layout of the ranks (docs/parallelism.md): tensor-parallel (tp) × pipeline (pp) ×
// data-parallel (dp) groups, dp = world / (tp·pp). A rank's place is
//   rank = (dp_rank · pp + pp_rank) · tp + tp_rank,
// tensor-parallel peers adjacent (they exchange activations every layer, so they belong on
// one machine, as Megatron places them).
#pragma once

#include <string>

#include "distributed/world.h"

namespace fp8lm::dist {

struct Grid {
  int tp = 1, pp = 1, dp = 1;
  int tp_rank = 0, pp_rank = 0, dp_rank = 0;
  Group tp_group, pp_group, dp_group;  // this rank's groups (the world when the size is 1 of 1)
  // The ranks of this rank's pipeline stage (tp × dp: they cast parts of the same FP8
  // tensors), and the first and last stage of this rank's pipeline (they hold the tied wte;
  // only there, with pp > 1).
  Group stage_group, tied_group;
  std::string str() const;  // "tp 2 × pp 1 × dp 2"
};

// The world split into groups (collective over the world: every rank calls it with the same
// tp and pp). Throws Error, naming parallel.tp / parallel.pp, unless tp·pp divides the world.
Grid make_grid(int tp, int pp);

}  // namespace fp8lm::dist
