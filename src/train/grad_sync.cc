#include "train/grad_sync.h"

#include <vector>

#include "core/check.h"
#include "distributed/collectives.h"
#include "distributed/world.h"
#include "kernels/cast.h"

namespace fp8lm {

namespace {

dist::Fp8Scaling scaling_of(const std::string& name) {
  const auto mode = dist::fp8_scaling_from_name(name);
  FP8LM_CHECK(mode.has_value(), "precision.grad_scaling = '", name,
              "': must be auto, pre, post or sqrt");
  return *mode;
}

}  // namespace

GradSync::GradSync(PrecisionLevel level, const std::string& grad_scaling, std::vector<int> owner,
                   dist::Group group)
    : level_(level),
      group_(group),
      fp8_(scaling_of(grad_scaling), dist::kDefaultBucketBytes, group),
      owner_(std::move(owner)) {}

void GradSync::average(Gpt& model, bool measure) {
  std::vector<std::string> names;  // only telemetry labels records
  if (measure)
    for (const ParamSpec& s : model.trainable_specs()) names.push_back(s.name);
  average(model.grad_buffers(), names, measure);
}

void GradSync::average(const std::vector<MutableScaledView>& g,
                       const std::vector<std::string>& names, bool measure) {
  if (group_.size() == 1) return;
  const LevelPlan& plan = level_plan(level_);
  if (plan.grad_wire != DType::kE4M3) {
    std::vector<dist::F32Span> spans;
    for (const MutableScaledView& b : g) {
      FP8LM_CHECK(b.data.dtype == DType::kF32 && b.tensor_scale() == 1.0f, "the ", plan.name,
                  " level has unscaled FP32 gradients");
      spans.push_back({static_cast<float*>(b.data.data), b.numel()});
    }
    if (plan.grad_wire == DType::kF32)
      dist::allreduce_mean_f32(spans, dist::kDefaultBucketBytes, "allreduce_f32", group_);
    else
      dist::allreduce_mean_bf16(spans, dist::kDefaultBucketBytes, group_);
    return;
  }
  // Telemetry: the exact mean of the E4M3 gradients as they enter the reduction (a
  // collective: `measure` is the same on every rank).
  const bool probing = measure && names.size() == g.size();
  std::vector<std::vector<float>> exact;
  if (probing) {
    std::vector<dist::F32Span> spans;
    exact.resize(g.size());
    for (size_t t = 0; t < g.size(); ++t) {
      exact[t].resize(g[t].numel());
      kernels::dequantize(exact[t].data(), g[t]);
      spans.push_back({exact[t].data(), exact[t].size()});
    }
    dist::allreduce_mean_f32(spans, dist::kDefaultBucketBytes, "telemetry_f32", group_);
  }
  if (plan.sharded) {
    FP8LM_CHECK(owner_.size() == g.size(), "a sharded level needs an owner per tensor");
    fp8_.reduce_to_owners(g, owner_);
  } else {
    fp8_.allreduce(g);
  }
  if (probing && probe_ != nullptr && probe_->wants())
    for (size_t t = 0; t < g.size(); ++t)
      if (!plan.sharded || owner_[t] == group_.rank())
        probe_->record(names[t], "wire", exact[t].data(), g[t]);
}

}  // namespace fp8lm
