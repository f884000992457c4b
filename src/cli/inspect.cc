// fp8lm inspect: one line per tensor (name, dtype, shape, bytes, scaling, amax) and, with --format,
// what per-tensor scaling into that FP8 format would do to the values.
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "cli/tensor_values.h"
#include "core/check.h"
#include "kernels/cast.h"
#include "numerics/float_format.h"
#include "tensor/safetensors.h"
#include "tensor/scaling.h"

namespace fp8lm::cli {
namespace {

struct InspectOptions {
  std::string file, format;
  bool json = false;
};

struct Fractions {
  double underflow = 0;  // nonzero values that become ±0
  double saturate = 0;   // values beyond the format's max after scaling (incl. ±inf)
};

// Fractions under a just-in-time power-of-two scale from the tensor's amax.
Fractions scaling_fractions(const float* x, size_t n, float amax, DType format) {
  Fractions fr;
  if (n == 0) return fr;
  const float fmax = format_max(format);
  const float scale = compute_scale(amax, fmax, 0, true).value_or(1.0f);
  const auto q = std::make_unique<uint8_t[]>(n);
  kernels::quantize(q.get(), format, x, n, scale, true);
  const uint32_t mag = float_format(format).magnitude_mask();
  size_t under = 0, sat = 0;
  for (size_t i = 0; i < n; ++i) {
    if (x[i] != 0.0f && (q[i] & mag) == 0) ++under;
    if (std::fabs(x[i] * scale) > fmax) ++sat;
  }
  fr.underflow = static_cast<double>(under) / static_cast<double>(n);
  fr.saturate = static_cast<double>(sat) / static_cast<double>(n);
  return fr;
}

void run_inspect(const InspectOptions& o) {
  apply_global_options();
  const SafetensorsFile f(o.file);
  const std::optional<DType> format =
      o.format.empty() ? std::nullopt : dtype_from_name(o.format);
  nlohmann::json rows = nlohmann::json::array();
  for (const SafetensorsEntry& e : f.tensors()) {
    nlohmann::json row = {{"name", e.name},
                          {"dtype", std::string(dtype_name(e.view.dtype))},
                          {"shape", std::vector<int64_t>(e.view.shape.begin(), e.view.shape.end())},
                          {"bytes", e.view.bytes()}};
    std::string line = e.name + "  " + std::string(dtype_name(e.view.dtype)) + "  " +
                       e.view.shape.str() + "  " + std::to_string(e.view.bytes()) + " B";
    if (is_float(e.view.dtype) && !is_scale_inv_of_other(f, e.name)) {
      const TensorValues v = tensor_values(f, e);
      const float a = kernels::amax(v.data, v.n);
      row["scaling"] = std::string(scaling_mode_name(v.mode));
      line += "  scaling=" + std::string(scaling_mode_name(v.mode));
      row["amax"] = std::isfinite(a) ? nlohmann::json(a) : nlohmann::json(std::to_string(a));
      char buf[96];
      std::snprintf(buf, sizeof buf, "  amax=%.6g", static_cast<double>(a));
      line += buf;
      if (format) {
        const Fractions fr = scaling_fractions(v.data, v.n, a, *format);
        row["underflow"] = fr.underflow;
        row["saturate"] = fr.saturate;
        std::snprintf(buf, sizeof buf, "  %s: underflow=%.4f%% saturate=%.4f%%",
                      o.format.c_str(), 100 * fr.underflow, 100 * fr.saturate);
        line += buf;
      }
    }
    if (o.json) {
      rows.push_back(std::move(row));
    } else {
      std::printf("%s\n", line.c_str());
    }
  }
  if (o.json) std::printf("%s\n", rows.dump(2).c_str());
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand(
      "inspect", "List the tensors of a safetensors file: name, dtype, shape, bytes, scaling, amax");
  sub->add_option("FILE", o->file, "A .safetensors file")->required();
  sub->add_option("--format", o->format,
                  "Also report the fraction of values that would underflow to zero or "
                  "saturate under per-tensor scaling into this FP8 format")
      ->check(CLI::IsMember({"e4m3", "e5m2"}));
  sub->add_flag("--json", o->json, "Print a JSON array instead of lines");
  sub->callback([o] { run_inspect(*o); });
}

}  // namespace fp8lm::cli
