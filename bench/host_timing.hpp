#pragma once
// What the host benchmarks share besides a workload: wall-clock timing of back-to-back calls and the memory
// bandwidth floors (memcpy, read-only), each measured in the benchmark's own run.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <limits>
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

/// CPU seconds all of the process's threads have used: unlike wall time, not stretched when other jobs take the
/// cores (std::clock is the process's CPU time on POSIX).
inline double cpu_seconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

/// Wall and CPU seconds (all threads) per call of `run`, each its fastest of 15 repetitions of >= 5 ms after a
/// warm-up call: a limit is the best the machine shows (other work only slows a repetition down), unlike the
/// baselines' medians.
struct call_cost {
  double wall;
  double cpu;
};

template <class Run>
call_cost best_seconds(Run& run) {
  const double once = time_calls(run, 1);
  const long calls = std::max(1L, static_cast<long>(std::ceil(5e-3 / std::max(once, 1e-9))));
  call_cost best{once, std::numeric_limits<double>::max()};
  for (int repetition = 0; repetition < 15; ++repetition) {
    const double cpu_start = cpu_seconds();
    best.wall = std::min(best.wall, time_calls(run, calls) / static_cast<double>(calls));
    best.cpu = std::min(best.cpu, (cpu_seconds() - cpu_start) / static_cast<double>(calls));
  }
  return best;
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

/// The read-only bandwidth floor: a buffer of 64-bit words summed, one contiguous share per thread of `policy`,
/// each share read as eight streams. read(bytes) sums the next `bytes` of the buffer (from its start again when
/// they do not fit), so successive reads of less than the buffer come from memory, not from a cache the previous
/// read warmed; bandwidth() is the fastest read of the whole buffer at construction (best_seconds).
class read_floor {
 public:
  explicit read_floor(const ngemb::host_policy& policy, std::size_t bytes = std::size_t{1} << 30)
      : words_(bytes / sizeof(std::uint64_t), 1), sums_(policy.resolved_threads()) {
    auto run = [this] { read(this->bytes()); };
    bandwidth_ = static_cast<double>(this->bytes()) / best_seconds(run).wall;
  }

  /// Sums the next `bytes` (at most bytes()) of the buffer; up to 64 trailing bytes per thread are left out.
  void read(std::size_t bytes) {
    const std::size_t words = bytes / sizeof(std::uint64_t);
    if (offset_ + words > words_.size()) {
      offset_ = 0;
    }
    const std::uint64_t* const first = words_.data() + offset_;
    offset_ += words;
    const std::size_t threads = sums_.size();
    ngemb::for_each_n(ngemb::host_policy{static_cast<unsigned>(threads), 1}, threads, [&](std::size_t part) {
      // Eight streams at once, as the kernels read several (eight or four) rows of weights at a time: one stream
      // alone leaves memory bandwidth unused on this machine (as bench/fp8_gemm.cpp found), which would make the
      // floor no floor. Integer sums vectorise without reassociating floats.
      constexpr std::size_t streams = 8;
      const std::size_t begin = words * part / threads;
      const std::size_t length = (words * (part + 1) / threads - begin) / streams;
      std::uint64_t sum[streams] = {};
      for (std::size_t i = 0; i < length; ++i) {
        for (std::size_t stream = 0; stream < streams; ++stream) {
          sum[stream] += first[begin + stream * length + i];
        }
      }
      for (std::size_t stream = 1; stream < streams; ++stream) {
        sum[0] += sum[stream];
      }
      sums_[part] = sum[0];
    });
    benchmark::DoNotOptimize(sums_.data());
    benchmark::ClobberMemory();
  }

  /// The buffer's size.
  [[nodiscard]] std::size_t bytes() const { return words_.size() * sizeof(std::uint64_t); }
  /// Bytes read per second.
  [[nodiscard]] double bandwidth() const { return bandwidth_; }

 private:
  std::vector<std::uint64_t> words_;  // all 1: every page faulted in before timing
  std::vector<std::uint64_t> sums_;
  std::size_t offset_ = 0;  // in words
  double bandwidth_ = 0;
};

}  // namespace ngemb_bench
