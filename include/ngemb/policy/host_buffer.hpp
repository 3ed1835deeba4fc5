#pragma once
// Memory owned for a host policy, with the interface of device_buffer: move-only, zero-initialised, allocated from
// the policy's memory resource and given back to the same resource when it dies.
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "ngemb/core/checked.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/memory_resource.hpp"

namespace ngemb {

/// Selects the host_buffer constructor that leaves the values unset.
struct for_overwrite_t {
  explicit for_overwrite_t() = default;
};
inline constexpr for_overwrite_t for_overwrite{};

template <class T>
class host_buffer {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "host_buffer holds plain values (the same ones device_buffer can hold)");

 public:
  /// Cache-line alignment at least, so rows start where vector loads want them.
  static constexpr std::size_t alignment = std::max<std::size_t>(64, alignof(T));

  host_buffer() = default;

  /// `size` zeroed values from the policy's resource (get_memory_resource(policy)). A resource out of memory
  /// (std::bad_alloc) is ngemb::out_of_memory, so callers that can name the sizes to lower catch one type.
  template <class Policy>
    requires requires(const Policy& policy) {
      { get_memory_resource(policy) } -> std::convertible_to<host_resource_ref>;
    }
  host_buffer(const Policy& policy, std::size_t size) : host_buffer(policy, size, for_overwrite) {
    std::uninitialized_value_construct_n(data_, size_);
  }

  /// `size` values left as the resource returns them, for scratch the caller writes before reading (as
  /// std::make_unique_for_overwrite): zeroing a GEMM's widening panels per call would cost as much as filling them.
  template <class Policy>
    requires requires(const Policy& policy) {
      { get_memory_resource(policy) } -> std::convertible_to<host_resource_ref>;
    }
  host_buffer(const Policy& policy, std::size_t size, for_overwrite_t /*tag*/)
      : resource_(get_memory_resource(policy)), size_(size) {
    if (size_ != 0) {
      const std::size_t bytes = checked_bytes<T>(size_, "host_buffer");
      if (bytes > static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max())) {
        throw invalid_argument("host_buffer: " + std::to_string(bytes) + " bytes exceed the largest object, " +
                               std::to_string(std::numeric_limits<std::ptrdiff_t>::max()) + " bytes");
      }
      try {
        data_ = static_cast<T*>(resource_.allocate(bytes, alignment));
      } catch (const std::bad_alloc&) {
        throw out_of_memory("host_buffer: cannot allocate " + std::to_string(bytes) + " bytes");
      }
    }
  }

  host_buffer(const host_buffer&) = delete;
  host_buffer& operator=(const host_buffer&) = delete;
  host_buffer(host_buffer&& other) noexcept { take(other); }
  host_buffer& operator=(host_buffer&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  ~host_buffer() { release(); }

  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] T* data() { return data_; }
  [[nodiscard]] const T* data() const { return data_; }
  [[nodiscard]] view<T> as_view() { return {data_, size_}; }
  [[nodiscard]] view<const T> as_view() const { return {data_, size_}; }

 private:
  void take(host_buffer& other) noexcept {
    resource_ = other.resource_;
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }

  void release() noexcept {
    if (data_ != nullptr) {
      resource_.deallocate(data_, size_ * sizeof(T), alignment);
      data_ = nullptr;
    }
  }

  host_resource_ref resource_;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ngemb
