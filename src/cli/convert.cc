// fp8lm convert: every floating tensor of a safetensors file to another dtype, optionally
// scaled per tensor, in 128×128 blocks (DeepSeek-V3's FP8 checkpoint layout) or MX 1×32
// blocks with e8m0 scales; other tensors are copied. Inputs may be scaled the same ways
// (NAME with NAME_scale_inv): their values are dequantized first, so --to f32 reads any.
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/tensor_values.h"
#include "core/check.h"
#include "kernels/cast.h"
#include "tensor/safetensors.h"
#include "tensor/scaling.h"

namespace fp8lm::cli {
namespace {

struct ConvertOptions {
  std::string in, out, to, scaling = "none";
  bool no_saturate = false;
};

void run_convert(const ConvertOptions& o) {
  apply_global_options();
  const DType to = *dtype_from_name(o.to);  // validated by CLI11
  const bool per_tensor = o.scaling == "tensor";
  const ScalingMode blocks = o.scaling == "block"   ? ScalingMode::kBlock128
                             : o.scaling == "mxfp8" ? ScalingMode::kMx32
                                                    : ScalingMode::kNone;
  if ((per_tensor || blocks != ScalingMode::kNone) &&
      !(to == DType::kE4M3 || to == DType::kE5M2 || to == DType::kF16))
    fail("--scaling ", o.scaling, " needs --to e4m3, e5m2 or f16 (got --to ", o.to, ")");

  const SafetensorsFile in(o.in);
  std::vector<std::unique_ptr<Tensor>> keep;  // storage behind the output views
  std::vector<std::pair<std::string, ConstTensorView>> out;
  for (const SafetensorsEntry& e : in.tensors()) {
    if (is_scale_inv_of_other(in, e.name)) continue;  // consumed with its tensor
    if (!is_float(e.view.dtype)) {
      out.emplace_back(e.name, e.view);
      continue;
    }
    TensorValues v = tensor_values(in, e);
    if (to == DType::kF32) {
      if (!v.owned) {
        out.emplace_back(e.name, e.view);  // already the values: copy through
      } else {
        keep.push_back(std::make_unique<Tensor>(std::move(*v.owned)));
        out.emplace_back(e.name, keep.back()->view());
      }
      continue;
    }
    if (blocks != ScalingMode::kNone) {
      const ScaledView shape_of{e.view, blocks, {}};
      auto q = std::make_unique<Tensor>(to, e.view.shape, MemCategory::kWorkspace);
      auto s = std::make_unique<Tensor>(block_shape(blocks).scale_dtype,
                                        scale_grid_shape(e.view.shape, blocks), MemCategory::kWorkspace);
      kernels::quantize_blocks(q->data(), to, v.data, shape_of.rows(), shape_of.cols(),
                               block_shape(blocks), s->data(), !o.no_saturate);
      out.emplace_back(e.name, q->view());
      out.emplace_back(e.name + std::string(kScaleInvSuffix), s->view());
      keep.push_back(std::move(q));
      keep.push_back(std::move(s));
      continue;
    }
    float scale = 1.0f;
    if (per_tensor) {
      const float a = kernels::amax(v.data, v.n);
      const auto s = compute_scale(a, format_max(to), /*margin=*/0, /*pow2=*/true);
      if (!s && a != 0.0f)  // all-zero tensors need no scale; inf/NaN deserve a word
        std::fprintf(stderr, "fp8lm: warning: %s: amax is %g, using scale 1\n", e.name.c_str(),
                     static_cast<double>(a));
      scale = s.value_or(1.0f);
    }
    auto q = std::make_unique<Tensor>(to, e.view.shape, MemCategory::kWorkspace);
    kernels::quantize(q->data(), to, v.data, v.n, scale, !o.no_saturate);
    out.emplace_back(e.name, q->view());
    keep.push_back(std::move(q));
    if (per_tensor) {
      auto si = std::make_unique<Tensor>(DType::kF32, Shape{}, MemCategory::kWorkspace);
      *si->as<float>() = 1.0f / scale;
      out.emplace_back(e.name + std::string(kScaleInvSuffix), si->view());
      keep.push_back(std::move(si));
    }
  }
  write_safetensors(o.out, out, in.metadata());
}

}  // namespace

void register_convert(CLI::App& app) {
  auto o = std::make_shared<ConvertOptions>();
  CLI::App* sub = app.add_subcommand(
      "convert", "Convert every floating tensor of a safetensors file; copy the others");
  sub->add_option("IN", o->in, "Input .safetensors")->required();
  sub->add_option("OUT", o->out, "Output .safetensors (written atomically)")->required();
  sub->add_option("--to", o->to, "Target dtype")
      ->required()
      ->check(CLI::IsMember({"e4m3", "e5m2", "bf16", "f16", "f32"}));
  sub->add_option("--scaling", o->scaling,
                  "none: cast values as they are; tensor: per-tensor power-of-two scale from "
                  "the amax, stored as NAME_scale_inv (F32 scalar); block: 128x128 blocks "
                  "(NAME_scale_inv F32 [ceil(rows/128), ceil(cols/128)], DeepSeek-V3's layout); "
                  "mxfp8: 1x32 blocks along each row (NAME_scale_inv F8_E8M0 [rows, ceil(cols/32)])")
      ->check(CLI::IsMember({"none", "tensor", "block", "mxfp8"}))
      ->capture_default_str();
  sub->add_flag("--no-saturate", o->no_saturate,
                "Overflow becomes inf (e5m2, f16, bf16) or NaN (e4m3) instead of +-max");
  sub->callback([o] { run_convert(*o); });
}

}  // namespace fp8lm::cli
