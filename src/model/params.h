// GPT-2 parameters: one flat FP32 buffer (the master values) with a named view per tensor,
// in Hugging Face GPT-2 order, names and shapes (Conv1D weights are [in, out]).
// wte has padded_vocab() rows in memory (the padding rows stay zero); files hold vocab_size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>
#include <string>
#include <vector>

#include "model/config.h"
#include "tensor/scaled_view.h"
#include "tensor/tensor.h"

namespace fp8lm {

// How a tensor-parallel rank holds a parameter (docs/parallelism.md, Megatron's split).
enum class Split : uint8_t {
  kNone,  // replicated: every rank holds all of it
  kRows,  // dim 0 split: wte's vocabulary rows; row-parallel weights [in, out] by in
  kCols,  // the last dim split: column-parallel weights [in, out] by out, and their biases
  kQkv,   // c_attn's last dim: q, k and v each split by heads, held as [q_r | k_r | v_r]
};

// Rank `rank` of a tensor-parallel group of `size` (the default: one process, no split).
struct TpShard {
  int rank = 0;
  int size = 1;
};

// Stage `rank` of a pipeline of `size` stages (the default: one process, every layer).
// Stages hold contiguous blocks of layers (earlier stages one more when they do not divide);
// the first also wte and wpe, the last ln_f and wte again (the LM head's tied copy).
struct PpStage {
  int rank = 0;
  int size = 1;
  bool first() const { return rank == 0; }
  bool last() const { return rank == size - 1; }
};
// The layers [first, second) of a stage. Throws Error (naming parallel.pp) when there are
// fewer layers than stages.
std::pair<int, int> stage_layers(const GptConfig& cfg, PpStage pp);

struct ParamSpec {
  std::string name;    // e.g. "h.3.mlp.c_fc.weight"
  Shape shape;         // in memory, this rank's shard (wte: [padded_vocab / tp, C])
  size_t offset;       // elements from the start of the flat buffer
  bool linear_weight;  // weight of one of the four FP8 Linear layers of a block
  Split split = Split::kNone;
  Shape full_shape;    // the whole tensor (= shape without tensor parallelism)
  size_t numel() const { return static_cast<size_t>(shape.numel()); }
};

// The layout of a config's parameters (no storage): specs in file order, each holding the
// shard of rank tp.rank, of the tensors of pipeline stage `pp`. Throws Error (naming
// parallel.tp) when the config cannot be split tp.size ways: heads, 4·n_embd and the padded
// vocabulary must divide.
std::vector<ParamSpec> param_layout(const GptConfig& cfg, TpShard tp = {}, PpStage pp = {});
// Copies between a whole tensor and rank tp.rank's shard of it (elements of elem_bytes):
// extract_shard copies the shard out of `full`, place_shard puts it back into its place.
void extract_shard(const ParamSpec& s, TpShard tp, const void* full, void* shard,
                   size_t elem_bytes);
void place_shard(const ParamSpec& s, TpShard tp, const void* shard, void* full, size_t elem_bytes);

// GPT-2 initialisation: N(0, 0.02) weights (residual projections scaled by
// 1/sqrt(2·n_layer)), LayerNorm weights 1, biases 0; deterministic in `seed`. Produces one
// tensor at a time, in spec order, so no full FP32 copy of a large model need exist.
class Gpt2Init {
 public:
  Gpt2Init(const GptConfig& cfg, uint64_t seed);
  // Writes the values of spec i (which must be the next one) into out[0..numel).
  void next(size_t i, float* out);
  // The values of the tensor named `name` (at or after the next one: the tensors before it
  // are drawn and dropped, so a pipeline stage starts from the values one process does).
  void next_named(const std::string& name, float* out);

 private:
  GptConfig cfg_;
  std::vector<ParamSpec> specs_;
  std::mt19937_64 rng_;
  size_t next_ = 0;
};

class GptParams {
 public:
  // FP32 values of every parameter (accounted as master weights): for tests, benchmarks,
  // and evaluating or sampling a checkpoint's model.safetensors. Training keeps its masters
  // in the optimizer instead, in the level's format.
  explicit GptParams(const GptConfig& cfg);

  const GptConfig& config() const { return cfg_; }
  const std::vector<ParamSpec>& specs() const { return specs_; }
  float* data() const { return data_.as<float>(); }
  size_t numel() const { return data_.numel(); }
  float* at(size_t spec) const { return data() + specs_[spec].offset; }
  // Every tensor as an unscaled FP32 view, in spec order (what Gpt::set_weights takes).
  std::vector<ScaledView> views() const;

  float* wte() const { return at(0); }  // [Vp, C]
  float* wpe() const { return at(1); }  // [seq_len, C]
  float* lnf_w() const { return at(specs_.size() - 2); }
  float* lnf_b() const { return at(specs_.size() - 1); }

  // All tensors from Gpt2Init(config, seed).
  void init_gpt2(uint64_t seed);
  // model.safetensors with Hugging Face names, F32 values (wte: vocab_size rows).
  void save(const std::string& path) const;
  // Loads a file written by save() or by Hugging Face; every tensor must be present with
  // the config's shape (errors name the file and the tensor).
  void load(const std::string& path);

 private:
  GptConfig cfg_;
  std::vector<ParamSpec> specs_;
  Tensor data_;
};

}  // namespace fp8lm
