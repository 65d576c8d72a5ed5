// Percentile of bench samples, by nearest rank.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/clock.h"

namespace vmf {

// The smallest value with at least p% of the samples at or below it; 0 for none.
inline Duration Percentile(std::vector<Duration> samples, double p) {
  if (samples.empty()) return Duration{0};
  std::sort(samples.begin(), samples.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(samples.size())));
  rank = std::clamp<size_t>(rank, 1, samples.size());
  return samples[rank - 1];
}

}  // namespace vmf
