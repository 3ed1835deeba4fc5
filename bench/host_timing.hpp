#pragma once
// What the host benchmarks share besides a workload: wall-clock timing of back-to-back calls and the memcpy
// bandwidth floor, each measured in the benchmark's own run.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <vector>

#include "ngemb/policy/host_policy.hpp"

#include "median.hpp"

namespace ngemb_bench {

using clock_type = std::chrono::steady_clock;

inline double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

/// Seconds `calls` back-to-back calls of `run` take.
template <class Run>
double time_calls(Run& run, long calls) {
  const auto start = clock_type::now();
  for (long call = 0; call < calls; ++call) {
    run();
  }
  return seconds_since(start);
}

/// The memory-bandwidth floor: 1 GiB copied by std::memcpy, one contiguous share per thread of `policy` (with one
/// thread a copy reaches less of the machine's bandwidth than the library's threads can).
class memcpy_floor {
 public:
  static constexpr std::size_t bytes = std::size_t{1} << 30;

  explicit memcpy_floor(const ngemb::host_policy& policy) : policy_(policy), source_(bytes), target_(bytes) {
    std::memset(source_.data(), 1, bytes);  // fault every page in before timing
    std::memset(target_.data(), 0, bytes);
    auto run = [this] { copy(); };
    bandwidth_ = 2.0 * static_cast<double>(bytes) /
                 ngemb_bench::median_seconds([&run](long calls) { return time_calls(run, calls); });
  }

  void copy() {
    const std::size_t threads = policy_.resolved_threads();
    ngemb::for_each_n(ngemb::host_policy{static_cast<unsigned>(threads), 1}, threads, [this, threads](std::size_t part) {
      const std::size_t begin = bytes * part / threads;
      const std::size_t end = bytes * (part + 1) / threads;
      std::memcpy(target_.data() + begin, source_.data() + begin, end - begin);
    });
    benchmark::DoNotOptimize(target_.data());
    benchmark::ClobberMemory();
  }

  /// Bytes per second, read + write.
  [[nodiscard]] double bandwidth() const { return bandwidth_; }

 private:
  ngemb::host_policy policy_;
  std::vector<std::byte> source_;
  std::vector<std::byte> target_;
  double bandwidth_ = 0;
};

}  // namespace ngemb_bench
