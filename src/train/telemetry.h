// Telemetry of a training run (docs/telemetry.md): the model's FP8 casts on sampled steps as
// lines of telemetry.jsonl, and the run's extremes per role for the closing summary.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tensor/quant_stats.h"

namespace fp8lm {

// One telemetry.jsonl line.
nlohmann::json telemetry_json(int64_t step, const QuantRecord& r);

// Per role, the worst tensor and step seen: highest underflow and saturation, lowest SNR.
class TelemetrySummary {
 public:
  void add(int64_t step, const std::vector<QuantRecord>& records);
  bool empty() const { return roles_.empty(); }
  nlohmann::json json() const;
  // One line per role, for the console.
  std::string text() const;

 private:
  struct Worst {
    double value = 0;
    std::string tensor;
    int64_t step = 0;
  };
  struct Role {
    int64_t records = 0;
    Worst underflow, saturated, snr{1e300, "", 0};
  };
  std::map<std::string, Role> roles_;
};

// Divergence alarms (docs/telemetry.md). Each message names the tensor, role, value and the
// limit; a tensor, role and kind alarms once per run.
struct AlarmLimits {
  double underflow = 0.25;   // fraction of non-zero values cast to 0 (1: off)
  double saturation = 1e-3;  // fraction clipped at the format's max (1: off)
  double kurtosis = 8;       // growth of an input's kurtosis since its first sample (0: off)
  double loss_spike = 1.5;   // loss / mean of the previous 20 (0: off)
};

class Alarms {
 public:
  explicit Alarms(AlarmLimits limits) : limits_(limits) {}
  // The alarms this sampled step's casts raise. Also: a scale at the clamp (2^±126 within a
  // factor 2), where a cast can no longer follow its tensor.
  std::vector<std::string> check_casts(int64_t step, const std::vector<QuantRecord>& records);
  // A loss spike (checked every step, once 5 finite losses are known).
  std::optional<std::string> check_loss(int64_t step, double loss);
  // Every alarm raised: [{step, kind, tensor, role, value, message}].
  const nlohmann::json& raised() const { return log_; }

 private:
  std::optional<std::string> raise(int64_t step, const std::string& kind, const QuantRecord* r,
                                   double value, const std::string& message);
  AlarmLimits limits_;
  std::set<std::string> seen_;             // tensor/role/kind already reported
  std::map<std::string, double> kurtosis0_;  // first kurtosis of each input
  std::deque<double> losses_;
  nlohmann::json log_ = nlohmann::json::array();
};

}  // namespace fp8lm
