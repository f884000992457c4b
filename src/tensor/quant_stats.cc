#include "tensor/quant_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/cast.h"
#include "tensor/scaling.h"

namespace fp8lm {

double QuantStats::snr_db() const {
  if (signal == 0) return std::nan("");
  if (error == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / error);
}

double QuantStats::kurtosis() const {
  if (signal == 0) return std::nan("");
  return double(n - nonfinite) * fourth / (signal * signal);
}

namespace {

// Per-row scales of a view: row r's scale of column c is s[c / block_cols].
struct RowScales {
  const ScaledView& q;
  BlockScales b;
  size_t block_rows = 1, block_cols = 1, ld = 0;
  explicit RowScales(const ScaledView& v) : q(v), b(v.blocks()) {
    if (b.data == nullptr) return;
    block_rows = b.shape.rows ? b.shape.rows : std::max<size_t>(1, v.rows());
    block_cols = b.shape.cols ? b.shape.cols : std::max<size_t>(1, v.cols());
    ld = grid_extent(v.cols(), b.shape.cols);
  }
  float at(size_t r, size_t c) const {
    if (b.data == nullptr) return q.tensor_scale();
    return block_scale_at(b, ld, r / block_rows, c / block_cols);
  }
};

}  // namespace

QuantStats merge(QuantStats a, const QuantStats& b) {
  a.n += b.n;
  a.nonzero += b.nonzero;
  a.underflow += b.underflow;
  a.saturated += b.saturated;
  a.nonfinite += b.nonfinite;
  a.amax = std::max(a.amax, b.amax);
  a.signal += b.signal;
  a.error += b.error;
  a.fourth += b.fourth;
  return a;
}

QuantStats quant_stats(const float* x, const ScaledView& q) {
  const size_t rows = q.rows(), cols = q.cols(), n = q.numel();
  FP8LM_CHECK(rows * cols == n, "quant_stats: ", q.data.shape.str());
  const double fmax = info(q.data.dtype).max_finite;
  std::vector<float> y(n);
  kernels::dequantize(y.data(), q);
  const RowScales scales(q);
  const size_t min_rows = std::max<size_t>(1, (size_t{1} << 15) / std::max<size_t>(1, cols));
  std::vector<QuantStats> part(chunk_count(rows, min_rows));
  parallel_for(rows, min_rows, 1, [&](size_t chunk, size_t r0, size_t r1) {
    QuantStats s;
    for (size_t r = r0; r < r1; ++r)
      for (size_t c = 0; c < cols; ++c) {
        const size_t i = r * cols + c;
        const double v = x[i];
        ++s.n;
        if (!std::isfinite(v)) {
          ++s.nonfinite;
          continue;
        }
        const double sc = scales.at(r, c);
        s.amax = std::max(s.amax, std::fabs(v));
        s.signal += v * v;
        s.fourth += v * v * v * v;
        const double e = static_cast<double>(y[i]) - v;
        s.error += e * e;
        if (v != 0) {
          ++s.nonzero;
          if (y[i] == 0.0f) ++s.underflow;
        }
        if (std::fabs(v) / sc > fmax) ++s.saturated;
      }
    part[chunk] = s;
  });
  QuantStats total;
  for (const QuantStats& p : part) total = merge(total, p);  // chunk order: deterministic
  if (q.mode == ScalingMode::kNone || q.mode == ScalingMode::kTensor) {
    total.scale_min = total.scale_max = q.tensor_scale();
  } else {
    const Shape g = q.scales.shape;
    const size_t gr = g.rank() == 2 ? static_cast<size_t>(g[0]) : 1;
    const size_t gc = static_cast<size_t>(g[g.rank() - 1]);
    total.scale_min = std::numeric_limits<float>::infinity();
    total.scale_max = 0;
    for (size_t i = 0; i < gr; ++i)
      for (size_t j = 0; j < gc; ++j) {
        const float s = block_scale_at(scales.b, gc, i, j);
        if (std::isnan(s)) continue;  // a block holding inf/NaN
        total.scale_min = std::min(total.scale_min, s);
        total.scale_max = std::max(total.scale_max, s);
      }
  }
  return total;
}

void QuantProbe::set_what_if(const std::string& what_if) {
  what_if_.clear();
  what_if_dtype_ = DType::kF32;
  what_if_mode_ = ScalingMode::kNone;
  if (what_if == "none") return;
  if (what_if == "e4m3" || what_if == "e5m2") {
    what_if_dtype_ = what_if == "e4m3" ? DType::kE4M3 : DType::kE5M2;
  } else if (what_if == "tensor" || what_if == "1x128" || what_if == "128x128" || what_if == "mx32") {
    for (ScalingMode m : {ScalingMode::kTensor, ScalingMode::kRows1x128, ScalingMode::kBlock128,
                          ScalingMode::kMx32})
      if (scaling_mode_name(m) == what_if) what_if_mode_ = m;
  } else {
    fail("telemetry.what_if = '", what_if, "': must be none, e4m3, e5m2, tensor, 1x128, 128x128 "
         "or mx32");
  }
  what_if_ = what_if;
}

void QuantProbe::add(QuantRecord r) {
  for (QuantRecord& old : records_)
    if (old.tensor == r.tensor && old.role == r.role) {
      old = std::move(r);
      return;
    }
  records_.push_back(std::move(r));
}

void QuantProbe::record(const std::string& tensor, const std::string& role, const float* x,
                        const ScaledView& q) {
  if (!armed_) return;
  add({tensor, role, q.data.dtype, q.mode, quant_stats(x, q)});
  const bool fp8 = q.data.dtype == DType::kE4M3 || q.data.dtype == DType::kE5M2;
  if (what_if_.empty() || !fp8) return;  // optimizer states (FP16) keep their format
  const DType t = what_if_dtype_ == DType::kF32 ? q.data.dtype : what_if_dtype_;
  const ScalingMode m = what_if_mode_ == ScalingMode::kNone ? q.mode : what_if_mode_;
  // The alternative cast, just in time from the same values (a delayed scale has no
  // counterpart outside its history).
  const Shape shape{static_cast<int64_t>(q.rows()), static_cast<int64_t>(q.cols())};
  ScaledTensor alt = m == ScalingMode::kTensor
                         ? ScaledTensor(shape, ScalingRecipe{t, ScalingTiming::kJustInTime},
                                        MemCategory::kWorkspace)
                         : ScaledTensor(shape, t, m, MemCategory::kWorkspace);
  quantize(alt, x);
  add({tensor, role + "@" + what_if_, t, m, quant_stats(x, alt.view())});
}

void QuantProbe::record_stats(const std::string& tensor, const std::string& role, DType dtype,
                              ScalingMode mode, const QuantStats& stats) {
  if (armed_) add({tensor, role, dtype, mode, stats});
}

std::vector<QuantRecord> QuantProbe::take() {
  std::vector<QuantRecord> out;
  out.swap(records_);
  return out;
}

}  // namespace fp8lm
