#pragma once
// The host execution policy: runs one element operation over [0, n) in a loop, split across the threads of a
// shared pool (detail/host_pool.hpp) when the range is large enough to pay for waking them.
#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ngemb/core/checked.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/detail/host_pool.hpp"

namespace ngemb {

template <class T>
class host_buffer;

struct host_policy {
  /// Worker threads; 0 means std::thread::hardware_concurrency().
  unsigned threads = 1;
  /// Smallest number of elements worth giving to one thread (waking a pool thread costs microseconds).
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

namespace detail {

/// Buffers from this size on are aligned to 2 MiB and offered to transparent huge pages: a gather over gigabyte
/// tables in 4 KiB pages misses the TLB on nearly every row, and the page walk costs as much as the row.
inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

inline void* allocate_host_bytes(std::size_t bytes) {
  const std::size_t alignment = bytes >= huge_page_bytes ? huge_page_bytes : 64;
  const std::size_t rounded = checked_add(bytes, alignment - 1, "host_buffer") / alignment * alignment;
  void* memory = std::aligned_alloc(alignment, rounded);
  if (memory == nullptr) {
    throw out_of_memory("host_buffer: cannot allocate " + std::to_string(bytes) + " bytes");
  }
#if defined(__linux__)
  if (alignment == huge_page_bytes) {
    madvise(memory, rounded, MADV_HUGEPAGE);  // a hint: without THP the buffer simply keeps small pages
  }
#endif
  return memory;
}

}  // namespace detail

/// Memory owned for a host policy, with the interface of device_buffer: move-only, zero-initialised.
template <class T>
class host_buffer {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "host_buffer holds plain values (the same ones device_buffer can hold)");

 public:
  host_buffer() = default;
  host_buffer(const host_policy& /*policy*/, std::size_t size) : size_(size) {
    if (size_ != 0) {
      values_.reset(static_cast<T*>(detail::allocate_host_bytes(checked_bytes<T>(size_, "host_buffer"))));
      std::uninitialized_value_construct_n(values_.get(), size_);
    }
  }

  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] T* data() { return values_.get(); }
  [[nodiscard]] const T* data() const { return values_.get(); }
  [[nodiscard]] view<T> as_view() { return {values_.get(), size_}; }
  [[nodiscard]] view<const T> as_view() const { return {values_.get(), size_}; }

 private:
  struct free_memory {
    void operator()(T* memory) const noexcept { std::free(memory); }
  };
  std::unique_ptr<T, free_memory> values_;
  std::size_t size_ = 0;
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
