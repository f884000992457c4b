// Inline SVG charts (cli/svg_plot.h).
#include "cli/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace fp8lm::cli {
namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

std::string tick_label(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

// Maps data to pixels on one axis, linear or log10.
struct Scale {
  double lo, hi;
  bool log;
  double px0, px1;
  double map(double v) const {
    const double t = log ? (std::log10(v) - lo) / (hi - lo) : (v - lo) / (hi - lo);
    return px0 + t * (px1 - px0);
  }
  std::vector<double> ticks() const {
    std::vector<double> t;
    if (log) {
      // Decades; within less than two decades also 2× and 5× (1, 2, 5, 10, …).
      const bool fine = hi - lo < 2;
      const int step = std::max(1, static_cast<int>(std::ceil((hi - lo) / 6)));
      for (int e = static_cast<int>(std::floor(lo)); e <= static_cast<int>(std::ceil(hi)); e += step)
        for (double m : {1.0, 2.0, 5.0}) {
          if (m > 1 && !fine) break;
          const double v = m * std::pow(10.0, e);
          if (std::log10(v) >= lo - 1e-9 && std::log10(v) <= hi + 1e-9) t.push_back(v);
        }
      if (t.empty()) t = {std::pow(10.0, lo), std::pow(10.0, hi)};
      return t;
    }
    const double span = hi - lo;
    const double raw = span / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
    const double unit = raw / mag < 2 ? 2 * mag : raw / mag < 5 ? 5 * mag : 10 * mag;
    for (double v = std::ceil(lo / unit) * unit; v <= hi + 1e-9 * span; v += unit)
      t.push_back(std::abs(v) < 1e-12 * span ? 0 : v);
    return t;
  }
};

Scale fit(double lo, double hi, bool log, double px0, double px1) {
  if (log) {
    lo = std::log10(lo);
    hi = std::log10(hi);
  }
  if (!(hi > lo)) {  // one value (or none): a unit-wide range around it
    const double c = std::isfinite(lo) ? lo : 0;
    lo = c - 0.5;
    hi = c + 0.5;
  } else if (!log) {
    const double pad = 0.04 * (hi - lo);
    lo -= pad;
    hi += pad;
  }
  return {lo, hi, log, px0, px1};
}

bool usable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

}  // namespace

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string line_chart(const Axes& a, const std::vector<Series>& series, int width, int height) {
  const double L = 64, R = 12, T = 28, B = 40;
  const double legend_h = 16.0 * static_cast<double>((series.size() + 2) / 3);
  const double H = height + legend_h;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!usable(s.x[i], a.log_x) || !usable(s.y[i], a.log_y)) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]);
      y1 = std::max(y1, s.y[i]);
    }
  std::string o = "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                  std::to_string(width) + "\" height=\"" + fmt(H) + "\" viewBox=\"0 0 " +
                  std::to_string(width) + " " + fmt(H) + "\">\n";
  o += "<text x=\"" + fmt(width / 2.0) + "\" y=\"16\" text-anchor=\"middle\" class=\"title\">" +
       html_escape(a.title) + "</text>\n";
  if (!std::isfinite(x0)) {
    o += "<text x=\"" + fmt(width / 2.0) + "\" y=\"" + fmt(H / 2) +
         "\" text-anchor=\"middle\">no data</text>\n</svg>\n";
    return o;
  }
  const Scale sx = fit(x0, x1, a.log_x, L, width - R);
  const Scale sy = fit(y0, y1, a.log_y, height - B, T);
  o += "<rect x=\"" + fmt(L) + "\" y=\"" + fmt(T) + "\" width=\"" + fmt(width - L - R) +
       "\" height=\"" + fmt(height - T - B) + "\" class=\"frame\"/>\n";
  for (double v : sx.ticks()) {
    const double px = sx.map(v);
    o += "<line x1=\"" + fmt(px) + "\" y1=\"" + fmt(T) + "\" x2=\"" + fmt(px) + "\" y2=\"" +
         fmt(height - B) + "\" class=\"grid\"/><text x=\"" + fmt(px) + "\" y=\"" +
         fmt(height - B + 14) + "\" text-anchor=\"middle\">" + tick_label(v) + "</text>\n";
  }
  for (double v : sy.ticks()) {
    const double py = sy.map(v);
    o += "<line x1=\"" + fmt(L) + "\" y1=\"" + fmt(py) + "\" x2=\"" + fmt(width - R) + "\" y2=\"" +
         fmt(py) + "\" class=\"grid\"/><text x=\"" + fmt(L - 4) + "\" y=\"" + fmt(py + 4) +
         "\" text-anchor=\"end\">" + tick_label(v) + "</text>\n";
  }
  o += "<text x=\"" + fmt((L + width - R) / 2) + "\" y=\"" + fmt(height - 8.0) +
       "\" text-anchor=\"middle\">" + html_escape(a.x_label) + "</text>\n";
  o += "<text transform=\"translate(12," + fmt((T + height - B) / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">" + html_escape(a.y_label) + "</text>\n";
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    const std::string color = kPalette[k % std::size(kPalette)];
    std::string d;
    bool pen = false;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!usable(s.x[i], a.log_x) || !usable(s.y[i], a.log_y)) {
        pen = false;
        continue;
      }
      d += (pen ? "L" : "M") + fmt(sx.map(s.x[i])) + " " + fmt(sy.map(s.y[i]));
      pen = true;
      if (s.markers)
        o += "<circle cx=\"" + fmt(sx.map(s.x[i])) + "\" cy=\"" + fmt(sy.map(s.y[i])) +
             "\" r=\"2.5\" fill=\"" + color + "\"/>";
    }
    if (!d.empty())
      o += "<path d=\"" + d + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"1.5\"/>\n";
    const double lx = L + static_cast<double>(k % 3) * (width - L) / 3;
    const double ly = height + 4 + 16.0 * static_cast<double>(k / 3);
    o += "<rect x=\"" + fmt(lx) + "\" y=\"" + fmt(ly) + "\" width=\"10\" height=\"10\" fill=\"" +
         color + "\"/><text x=\"" + fmt(lx + 14) + "\" y=\"" + fmt(ly + 9) + "\">" +
         html_escape(s.name) + "</text>\n";
  }
  return o + "</svg>\n";
}

std::string heat_map(const std::string& title, const std::vector<std::string>& rows,
                     const std::vector<std::string>& cols,
                     const std::vector<std::vector<double>>& values, double vmax,
                     const std::string& unit) {
  const double label_w = 190, cell_h = 12, top = 28;
  const double cell_w = std::max(4.0, std::min(24.0, 600.0 / std::max<size_t>(1, cols.size())));
  const double W = std::max(label_w + cell_w * static_cast<double>(cols.size()) + 20,
                            7.0 * static_cast<double>(title.size() + unit.size()) + 120);
  const double H = top + cell_h * static_cast<double>(rows.size()) + 40;
  std::string o = "<svg class=\"heat\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt(W) +
                  "\" height=\"" + fmt(H) + "\">\n<text x=\"4\" y=\"16\" class=\"title\">" +
                  html_escape(title) + " (darkest = " + tick_label(vmax) + " " +
                  html_escape(unit) + ")</text>\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    const double y = top + cell_h * static_cast<double>(r);
    o += "<text x=\"" + fmt(label_w - 4) + "\" y=\"" + fmt(y + cell_h - 2) +
         "\" text-anchor=\"end\" class=\"small\">" + html_escape(rows[r]) + "</text>";
    for (size_t c = 0; c < cols.size(); ++c) {
      const double v = r < values.size() && c < values[r].size()
                           ? values[r][c]
                           : std::numeric_limits<double>::quiet_NaN();
      std::string fill = "#ccc";
      if (std::isfinite(v)) {
        const double t = vmax > 0 ? std::clamp(v / vmax, 0.0, 1.0) : 0.0;
        char b[16];
        std::snprintf(b, sizeof b, "#%02x%02x%02x", 255 - static_cast<int>(t * 120),
                      255 - static_cast<int>(t * 255), 255 - static_cast<int>(t * 255));
        fill = b;
      }
      o += "<rect x=\"" + fmt(label_w + cell_w * static_cast<double>(c)) + "\" y=\"" + fmt(y) +
           "\" width=\"" + fmt(cell_w) + "\" height=\"" + fmt(cell_h) + "\" fill=\"" + fill +
           "\"><title>" + html_escape(rows[r]) + " @ " + html_escape(cols[c]) + ": " +
           (std::isfinite(v) ? tick_label(v) : "n/a") + "</title></rect>";
    }
    o += "\n";
  }
  if (!cols.empty()) {  // first and (when there is room) last column labels
    const double y = top + cell_h * static_cast<double>(rows.size()) + 14;
    o += "<text x=\"" + fmt(label_w) + "\" y=\"" + fmt(y) + "\" class=\"small\">" +
         html_escape(cols.front()) + "</text>";
    if (cell_w * static_cast<double>(cols.size()) > 100)
      o += "<text x=\"" + fmt(label_w + cell_w * static_cast<double>(cols.size())) + "\" y=\"" +
           fmt(y) + "\" text-anchor=\"end\" class=\"small\">" + html_escape(cols.back()) +
           "</text>";
    o += "\n";
  }
  return o + "</svg>\n";
}

std::string bar_chart(const std::string& title, const std::vector<std::string>& labels,
                      const std::vector<double>& values, const std::string& unit) {
  const double label_w = 150, bar_h = 16, top = 26, W = 560;
  const double H = top + (bar_h + 4) * static_cast<double>(labels.size()) + 10;
  double vmax = 0;
  for (double v : values)
    if (std::isfinite(v)) vmax = std::max(vmax, v);
  std::string o = "<svg class=\"bars\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt(W) +
                  "\" height=\"" + fmt(H) + "\">\n<text x=\"4\" y=\"16\" class=\"title\">" +
                  html_escape(title) + "</text>\n";
  for (size_t i = 0; i < labels.size() && i < values.size(); ++i) {
    const double y = top + (bar_h + 4) * static_cast<double>(i);
    const double v = std::isfinite(values[i]) ? values[i] : 0;
    const double w = vmax > 0 ? (W - label_w - 90) * v / vmax : 0;
    o += "<text x=\"" + fmt(label_w - 4) + "\" y=\"" + fmt(y + bar_h - 4) +
         "\" text-anchor=\"end\">" + html_escape(labels[i]) + "</text><rect x=\"" + fmt(label_w) +
         "\" y=\"" + fmt(y) + "\" width=\"" + fmt(w) + "\" height=\"" + fmt(bar_h) + "\" fill=\"" +
         kPalette[0] + "\"/><text x=\"" + fmt(label_w + w + 4) + "\" y=\"" + fmt(y + bar_h - 4) +
         "\">" + tick_label(v) + " " + html_escape(unit) + "</text>\n";
  }
  return o + "</svg>\n";
}

}  // namespace fp8lm::cli
