#pragma once
// The host execution policy: runs one element operation over [0, n) in a loop, split across the threads of a
// shared pool (detail/host_pool.hpp) when the range is large enough to pay for waking them.
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <exception>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/detail/host_pool.hpp"
#include "ngemb/policy/host_buffer.hpp"
#include "ngemb/policy/memory_resource.hpp"

namespace ngemb {

struct host_policy {
  /// Worker threads; 0 means std::thread::hardware_concurrency().
  unsigned threads = 1;
  /// Smallest number of elements worth giving to one thread (waking a pool thread costs microseconds).
  std::size_t min_elements_per_thread = 16384;
  /// Where the policy's buffers come from (default: default_host_resource).
  host_resource_ref resource{};

  template <class T>
  using buffer = host_buffer<T>;

  /// This policy drawing its buffers from `memory` (as Thrust's par(alloc)): host_policy{4}.with(pool).
  [[nodiscard]] host_policy with(host_resource_ref memory) const {
    host_policy changed = *this;
    changed.resource = memory;
    return changed;
  }

  [[nodiscard]] unsigned resolved_threads() const {
    if (threads != 0) {
      return threads;
    }
    // glibc reads sysfs on every hardware_concurrency() call: ask once.
    static const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
    return hardware;
  }
};

/// The resource the policy's buffers and scratch come from.
inline host_resource_ref get_memory_resource(const host_policy& policy) { return policy.resource; }

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
  detail::host_pool::shared().run(workers, run_chunk);
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

/// The policy for element operations that each cover `elements` elements (row_chunk): min_elements_per_thread
/// counts elements, so operations over whole rows start threads once the rows are worth it.
inline host_policy for_operations_of(const host_policy& policy, std::size_t elements) {
  host_policy scaled = policy;
  scaled.min_elements_per_thread = std::max<std::size_t>(1, policy.min_elements_per_thread / std::max<std::size_t>(1, elements));
  return scaled;
}

/// Waits for all work issued on the policy (host work is already done when for_each_n returns).
inline void synchronize(const host_policy& /*policy*/) {}

}  // namespace ngemb
