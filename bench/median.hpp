#pragma once
// The benchmarks' baseline timer: a median over repetitions, measured in the benchmark's own run.
#include <algorithm>
#include <cmath>
#include <vector>

namespace ngemb_bench {

/// Median seconds per call, from `time_calls(calls)` = seconds that many back-to-back calls took. A warm-up of
/// >= 1 call and >= 20 ms first (first calls fault pages and grow scratch buffers), then 7 repetitions of >= 2 ms
/// each, or 3 when one call takes over 50 ms (the 77-GFLOP prefill: 7 would cost ~10 s per baseline on 2 cores).
/// The median ignores a repetition disturbed by other work on the machine.
template <class TimeCalls>
double median_seconds(TimeCalls&& time_calls) {
  double warm = 0;
  double once = 0;
  do {
    once = time_calls(1L);
    warm += once;
  } while (warm < 20e-3);
  const long calls = std::max(1L, static_cast<long>(std::ceil(2e-3 / std::max(once, 1e-9))));
  std::vector<double> repetitions(once > 50e-3 ? 3 : 7);
  for (double& repetition : repetitions) {
    repetition = time_calls(calls) / static_cast<double>(calls);
  }
  std::sort(repetitions.begin(), repetitions.end());
  return repetitions[repetitions.size() / 2];
}

}  // namespace ngemb_bench
