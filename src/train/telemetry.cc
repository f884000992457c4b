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
          {"kurtosis", finite_or_null(s.kurtosis())},
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

namespace {

std::string percent(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g%%", 100 * v);
  return b;
}

}  // namespace

std::optional<std::string> Alarms::raise(int64_t step, const std::string& kind,
                                         const QuantRecord* r, double value,
                                         const std::string& message) {
  const std::string tensor = r ? r->tensor : "", role = r ? r->role : "";
  if (!seen_.insert(tensor + "/" + role + "/" + kind).second) return std::nullopt;
  const std::string text = "step " + std::to_string(step) + ": " +
                           (r ? tensor + " " + role + ": " : std::string()) + message;
  log_.push_back({{"step", step},
                  {"kind", kind},
                  {"tensor", tensor},
                  {"role", role},
                  {"value", finite_or_null(value)},
                  {"message", text}});
  return text;
}

std::vector<std::string> Alarms::check_casts(int64_t step,
                                             const std::vector<QuantRecord>& records) {
  std::vector<std::string> out;
  auto add = [&](std::optional<std::string> m) {
    if (m) out.push_back(std::move(*m));
  };
  for (const QuantRecord& r : records) {
    const QuantStats& s = r.stats;
    const std::string fmt = std::string(dtype_name(r.dtype));
    if (s.underflow_rate() > limits_.underflow)
      add(raise(step, "underflow", &r, s.underflow_rate(),
                percent(s.underflow_rate()) + " of the non-zero values underflow to 0 in " + fmt +
                    " (telemetry.underflow_alarm = " + percent(limits_.underflow) + ")"));
    if (s.saturation_rate() > limits_.saturation)
      add(raise(step, "saturation", &r, s.saturation_rate(),
                percent(s.saturation_rate()) + " of the values are clipped at " + fmt +
                    "'s maximum (telemetry.saturation_alarm = " + percent(limits_.saturation) +
                    ")"));
    if (s.nonzero > 0 && (s.scale_min <= 0x1p-125f || s.scale_max >= 0x1p125f))
      add(raise(step, "scale", &r, s.scale_min <= 0x1p-125f ? s.scale_min : s.scale_max,
                "the scale reached its clamp (2^-126 or 2^126): the cast no longer follows the "
                "tensor's range"));
    const double k = s.kurtosis();
    if (limits_.kurtosis > 0 && (r.role == "x") && std::isfinite(k)) {
      const auto [it, first] = kurtosis0_.emplace(r.tensor, k);
      if (!first && k > limits_.kurtosis * it->second) {
        char b[160];
        std::snprintf(b, sizeof b,
                      "kurtosis %.3g, %.3gx its first sample's %.3g (telemetry.kurtosis_alarm = "
                      "%.3g): outliers are growing",
                      k, k / it->second, it->second, limits_.kurtosis);
        add(raise(step, "kurtosis", &r, k, b));
      }
    }
  }
  return out;
}

std::optional<std::string> Alarms::check_loss(int64_t step, double loss) {
  if (!std::isfinite(loss)) return std::nullopt;  // non-finite steps are skipped and counted
  std::optional<std::string> out;
  if (limits_.loss_spike > 0 && losses_.size() >= 5) {
    double mean = 0;
    for (double l : losses_) mean += l;
    mean /= static_cast<double>(losses_.size());
    if (loss > limits_.loss_spike * mean) {
      char b[160];
      std::snprintf(b, sizeof b,
                    "loss %.4f is %.3gx the mean %.4f of the previous %zu steps "
                    "(telemetry.loss_spike_alarm = %.3g)",
                    loss, loss / mean, mean, losses_.size(), limits_.loss_spike);
      seen_.erase("//loss");  // a spike may recur: each one is reported
      out = raise(step, "loss", nullptr, loss / mean, b);
    }
  }
  losses_.push_back(loss);
  if (losses_.size() > 20) losses_.pop_front();
  return out;
}

}  // namespace fp8lm
