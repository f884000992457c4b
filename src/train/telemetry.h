// Telemetry of a training run (docs/telemetry.md): the model's FP8 casts on sampled steps as
// lines of telemetry.jsonl, and the run's extremes per role for the closing summary.
#pragma once

#include <cstdint>
#include <map>
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

}  // namespace fp8lm
