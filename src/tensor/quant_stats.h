// What a cast to a narrow format did to a tensor (the numerics lab's telemetry,
// docs/telemetry.md): against the high-precision values it was cast from, how many non-zero
// values became 0 (underflow), how many exceeded the format's range and were clipped
// (saturation), and the error energy (MSE, SNR). QuantProbe collects these per tensor and
// role on the steps it is armed for; the model reports into it, the trainer writes it out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/scaled_view.h"

namespace fp8lm {

struct QuantStats {
  size_t n = 0;          // elements
  size_t nonzero = 0;    // finite non-zero reference values
  size_t underflow = 0;  // of those, cast to 0
  size_t saturated = 0;  // finite values with |x| / s > the format's max (clipped)
  size_t nonfinite = 0;  // inf/NaN reference values (not in the sums)
  double amax = 0;       // max |x| over finite values
  double signal = 0;     // Σ x² over finite values
  double error = 0;      // Σ (decode(q)·s − x)² over finite values
  double fourth = 0;     // Σ x⁴ over finite values
  float scale_min = 0, scale_max = 0;  // the scales s (one value per tensor, or the range)

  double underflow_rate() const { return nonzero ? double(underflow) / double(nonzero) : 0.0; }
  double saturation_rate() const { return n ? double(saturated) / double(n) : 0.0; }
  double mse() const { return n > nonfinite ? error / double(n - nonfinite) : 0.0; }
  // 10·log10(signal / error); +inf for an exact cast, NaN for an all-zero tensor.
  double snr_db() const;
  // E[x⁴] / E[x²]² of the finite values (3 for a zero-mean Gaussian; outliers raise it);
  // NaN for an all-zero tensor.
  double kurtosis() const;
};

// The statistics of two casts as one (counts and sums added, amax the larger; the scale
// range is a's).
QuantStats merge(QuantStats a, const QuantStats& b);

// Statistics of q (any dtype and scaling) against the values x (q.numel() floats) it was
// cast from. Exact counts; sums in double, in a fixed order (deterministic).
QuantStats quant_stats(const float* x, const ScaledView& q);

// One record: tensor "h.0.attn.c_attn", role "x" | "x.wgrad" | "W" | "dy" | "dy.wgrad" | "dW"
// | "grad", and the statistics of its cast this step.
struct QuantRecord {
  std::string tensor, role;
  DType dtype;
  ScalingMode mode;
  QuantStats stats;
};

// Collects records while armed (the trainer arms it on sampled steps): reporting sites call
// wants() first, so an unarmed probe costs one branch. A later record of the same tensor
// and role replaces the earlier one (gradient accumulation: the cast that is kept).
class QuantProbe {
 public:
  void arm(bool on) { armed_ = on; }
  bool wants() const { return armed_; }
  // "What if": every cast of an activation or gradient is also made, from the same values,
  // the other way — `what_if` names a format (e4m3, e5m2: same scaling) or a scaling
  // (tensor: one just-in-time scale; 1x128, 128x128, mx32: those blocks; same format) — and
  // recorded as role "ROLE@what_if". "none" turns it off. Throws Error for other names.
  void set_what_if(const std::string& what_if);
  void record(const std::string& tensor, const std::string& role, const float* x,
              const ScaledView& q);
  // A record whose statistics the caller computed (e.g. merged over chunks); no what-if.
  void record_stats(const std::string& tensor, const std::string& role, DType dtype,
                    ScalingMode mode, const QuantStats& stats);
  // The records since the last take(), in first-reported order; clears them.
  std::vector<QuantRecord> take();

 private:
  void add(QuantRecord r);
  bool armed_ = false;
  std::string what_if_;           // empty: off
  DType what_if_dtype_ = DType::kF32;   // kF32: keep the cast's format
  ScalingMode what_if_mode_ = ScalingMode::kNone;  // kNone: keep the cast's scaling
  std::vector<QuantRecord> records_;
};

}  // namespace fp8lm
