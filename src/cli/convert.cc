// fp8lm convert: every floating tensor of a safetensors file to another dtype, optionally
// with per-tensor scaling; other tensors are copied. A tensor NAME may come with an F32
// scalar NAME_scale_inv: its values are then dequant(NAME) · scale_inv.
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
  if (per_tensor && !(to == DType::kE4M3 || to == DType::kE5M2 || to == DType::kF16))
    fail("--scaling tensor needs --to e4m3, e5m2 or f16 (got --to ", o.to, ")");

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
                  "the amax, stored as NAME_scale_inv (F32 scalar)")
      ->check(CLI::IsMember({"none", "tensor"}))
      ->capture_default_str();
  sub->add_flag("--no-saturate", o->no_saturate,
                "Overflow becomes inf (e5m2, f16, bf16) or NaN (e4m3) instead of +-max");
  sub->callback([o] { run_convert(*o); });
}

}  // namespace fp8lm::cli
