#include "tensor/quant_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/cast.h"

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

}  // namespace

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

void QuantProbe::record(const std::string& tensor, const std::string& role, const float* x,
                        const ScaledView& q) {
  if (!armed_) return;
  QuantRecord r{tensor, role, q.data.dtype, q.mode, quant_stats(x, q)};
  for (QuantRecord& old : records_)
    if (old.tensor == tensor && old.role == role) {
      old = std::move(r);
      return;
    }
  records_.push_back(std::move(r));
}

std::vector<QuantRecord> QuantProbe::take() {
  std::vector<QuantRecord> out;
  out.swap(records_);
  return out;
}

}  // namespace fp8lm
