#pragma once
// The host execution policy: runs one element operation over [0, n) in a loop, split across std::threads when
// the range is large enough to pay for starting them.
#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"

namespace ngemb {

template <class T>
class host_buffer;

struct host_policy {
  /// Worker threads; 0 means std::thread::hardware_concurrency().
  unsigned threads = 1;
  /// Smallest number of elements worth giving to one thread (thread start costs tens of microseconds).
  std::size_t min_elements_per_thread = 16384;

  template <class T>
  using buffer = host_buffer<T>;

  [[nodiscard]] unsigned resolved_threads() const {
    if (threads != 0) {
      return threads;
    }
    // glibc reads sysfs on every hardware_concurrency() call: ask once.
    static const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
    return hardware;
  }
};

/// Memory owned for a host policy: a vector with the same interface as device_buffer.
template <class T>
class host_buffer {
 public:
  host_buffer() = default;
  host_buffer(const host_policy& /*policy*/, std::size_t size) : values_(size) {}

  [[nodiscard]] std::size_t size() const { return values_.size(); }
  [[nodiscard]] T* data() { return values_.data(); }
  [[nodiscard]] const T* data() const { return values_.data(); }
  [[nodiscard]] view<T> as_view() { return {values_.data(), values_.size()}; }
  [[nodiscard]] view<const T> as_view() const { return {values_.data(), values_.size()}; }

 private:
  std::vector<T> values_;
};

/// Runs `op(i)` for every i in [0, n). Exceptions from worker threads are rethrown on the caller.
template <class Op>
  requires std::invocable<Op&, std::size_t>
void for_each_n(const host_policy& policy, std::size_t n, Op op) {
  const std::size_t wanted = n / std::max<std::size_t>(1, policy.min_elements_per_thread);
  const std::size_t workers = wanted <= 1 ? 1 : std::min<std::size_t>(policy.resolved_threads(), wanted);
  if (workers <= 1) {
    for (std::size_t i = 0; i < n; ++i) {
      op(i);
    }
    return;
  }
  std::vector<std::exception_ptr> failures(workers);
  {
    std::vector<std::jthread> pool;
    pool.reserve(workers - 1);
    const auto run_chunk = [&](std::size_t worker) {
      try {
        const std::size_t begin = n * worker / workers;
        const std::size_t end = n * (worker + 1) / workers;
        for (std::size_t i = begin; i < end; ++i) {
          op(i);
        }
      } catch (...) {
        failures[worker] = std::current_exception();
      }
    };
    for (std::size_t worker = 1; worker < workers; ++worker) {
      pool.emplace_back(run_chunk, worker);
    }
    run_chunk(0);
  }
  for (const auto& failure : failures) {
    if (failure) {
      std::rethrow_exception(failure);
    }
  }
}

/// Copies host values into policy memory (a plain copy on the host).
template <class T>
void copy_to(const host_policy& /*policy*/, std::type_identity_t<view<const T>> source, view<T> destination) {
  detail::require_same_size("copy_to", source.size(), destination.size());
  std::copy(source.begin(), source.end(), destination.begin());
}

/// Copies policy memory back to host values.
template <class T>
void copy_to_host(const host_policy& policy, std::type_identity_t<view<const T>> source, view<T> destination) {
  copy_to(policy, source, destination);
}

/// Consecutive row elements one element operation handles: whole rows on the host, where the inner loop
/// vectorises (device_policy.cuh answers a few, so neighbouring threads touch neighbouring elements).
constexpr std::size_t row_chunk(const host_policy& /*policy*/) { return std::numeric_limits<std::size_t>::max(); }

/// Waits for all work issued on the policy (host work is already done when for_each_n returns).
inline void synchronize(const host_policy& /*policy*/) {}

}  // namespace ngemb
