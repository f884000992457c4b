#include "train/telemetry.h"

#include <cmath>
#include <cstdio>

namespace fp8lm {

namespace {

// JSON has no inf/NaN: those become null (an exact cast, or an all-zero tensor).
nlohmann::json finite_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

nlohmann::json telemetry_json(int64_t step, const QuantRecord& r) {
  const QuantStats& s = r.stats;
  return {{"step", step},
          {"tensor", r.tensor},
          {"role", r.role},
          {"dtype", std::string(dtype_name(r.dtype))},
          {"scaling", std::string(scaling_mode_name(r.mode))},
          {"n", s.n},
          {"amax", s.amax},
          {"scale_min", s.scale_min},
          {"scale_max", s.scale_max},
          {"underflow", s.underflow_rate()},
          {"saturated", s.saturation_rate()},
          {"mse", s.mse()},
          {"snr_db", finite_or_null(s.snr_db())},
          {"nonfinite", s.nonfinite}};
}

void TelemetrySummary::add(int64_t step, const std::vector<QuantRecord>& records) {
  for (const QuantRecord& r : records) {
    Role& role = roles_[r.role];
    ++role.records;
    auto worse = [&](Worst& w, double v, bool higher) {
      if (std::isnan(v) || (higher ? v <= w.value : v >= w.value)) return;
      w = {v, r.tensor, step};
    };
    worse(role.underflow, r.stats.underflow_rate(), true);
    worse(role.saturated, r.stats.saturation_rate(), true);
    worse(role.snr, r.stats.snr_db(), false);
  }
}

nlohmann::json TelemetrySummary::json() const {
  nlohmann::json out = nlohmann::json::object();
  auto worst = [](const Worst& w) {
    if (w.tensor.empty()) return nlohmann::json(nullptr);  // never above 0 (SNR: never finite)
    return nlohmann::json{{"value", finite_or_null(w.value)}, {"tensor", w.tensor},
                          {"step", w.step}};
  };
  for (const auto& [name, r] : roles_)
    out[name] = {{"records", r.records},
                 {"max_underflow", worst(r.underflow)},
                 {"max_saturated", worst(r.saturated)},
                 {"min_snr_db", worst(r.snr)}};
  return out;
}

std::string TelemetrySummary::text() const {
  auto where = [](const Worst& w) {
    return w.tensor.empty() ? std::string() : " (" + w.tensor + ", step " + std::to_string(w.step) + ")";
  };
  std::string out;
  for (const auto& [name, r] : roles_) {
    char snr[32] = "exact";
    if (!r.snr.tensor.empty()) std::snprintf(snr, sizeof snr, "%.1f dB", r.snr.value);
    char line[160];
    std::snprintf(line, sizeof line, "  %-9s underflow max %.3g%%", name.c_str(),
                  100 * r.underflow.value);
    out += line + where(r.underflow);
    std::snprintf(line, sizeof line, ", saturated max %.3g%%", 100 * r.saturated.value);
    out += line + where(r.saturated) + ", SNR min " + snr + where(r.snr) + "\n";
  }
  return out;
}

}  // namespace fp8lm
