// Inline SVG charts for fp8lm report (docs/report.md): line charts, heat maps and bar charts
// as self-contained markup (no script, no network), so a report opens anywhere and prints.
#pragma once

#include <string>
#include <vector>

namespace fp8lm::cli {

struct Series {
  std::string name;
  std::vector<double> x, y;  // non-finite y: a gap
  bool markers = false;      // draw points (sparse series such as validation losses)
};

struct Axes {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;  // non-positive values are left out on a log axis
};

std::string line_chart(const Axes& axes, const std::vector<Series>& series, int width = 560,
                       int height = 300);

// rows × cols cells coloured from 0 (white) to vmax (dark red); NaN cells grey. `cols` label
// the columns (e.g. steps), `rows` the rows (e.g. tensors).
std::string heat_map(const std::string& title, const std::vector<std::string>& rows,
                     const std::vector<std::string>& cols,
                     const std::vector<std::vector<double>>& values, double vmax,
                     const std::string& unit);

// One horizontal bar per label.
std::string bar_chart(const std::string& title, const std::vector<std::string>& labels,
                      const std::vector<double>& values, const std::string& unit);

std::string html_escape(const std::string& s);

}  // namespace fp8lm::cli
