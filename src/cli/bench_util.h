// Helpers shared by the `fp8lm bench` commands.
#pragma once

#include <algorithm>
#include <vector>

namespace fp8lm::cli {

// Median of the samples (the upper one of the middle two for an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace fp8lm::cli
