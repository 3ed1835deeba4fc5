#pragma once
// Device memory owned by RAII: freed exactly once, movable, never copied implicitly. A buffer comes from its
// policy's memory resource on the policy's stream (default: cudaMallocAsync; policy/device_memory_resource.cuh) and
// goes back to the same resource on the same stream, so creating and dropping scratch buffers per call never
// synchronises the device the way cudaFree does.
#include <cuda_runtime_api.h>

#include <concepts>
#include <cstddef>
#include <new>
#include <string>
#include <utility>

#include "ngemb/core/checked.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/device_memory_resource.cuh"

namespace ngemb {

template <class T>
class device_buffer {
 public:
  /// What cudaMalloc gives, so vector loads and CUB's temporary storage never see less.
  static constexpr std::size_t alignment = 256;

  device_buffer() = default;

  /// `size` values (not initialised) ordered on `policy.stream`: valid for work queued after this call on that
  /// stream, returned to the policy's resource when the buffer dies (after the work queued before that). A resource
  /// out of memory (std::bad_alloc) is ngemb::out_of_memory, as on the host, so callers that can name the sizes to
  /// lower catch one type; any other CUDA failure is a cuda_error.
  template <class Policy>
    requires requires(const Policy& policy) {
      cudaStream_t{policy.stream};
      { get_memory_resource(policy) } -> std::convertible_to<device_resource_ref>;
    }
  device_buffer(const Policy& policy, std::size_t size)
      : resource_(get_memory_resource(policy)), stream_(policy.stream), size_(size) {
    if (size_ != 0) {
      const std::size_t bytes = checked_bytes<T>(size_, "device_buffer");
      try {
        data_ = static_cast<T*>(resource_.allocate_async(bytes, alignment, stream_));
      } catch (const std::bad_alloc&) {
        throw out_of_memory("device_buffer: cannot allocate " + std::to_string(bytes) + " bytes");
      }
    }
  }

  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& other) noexcept { take(other); }
  device_buffer& operator=(device_buffer&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  ~device_buffer() { release(); }

  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] T* data() { return data_; }
  [[nodiscard]] const T* data() const { return data_; }
  [[nodiscard]] view<T> as_view() { return {data_, size_}; }
  [[nodiscard]] view<const T> as_view() const { return {data_, size_}; }

 private:
  void take(device_buffer& other) noexcept {
    resource_ = other.resource_;
    stream_ = other.stream_;
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }

  void release() noexcept {
    if (data_ != nullptr) {
      resource_.deallocate_async(data_, size_ * sizeof(T), alignment, stream_);
      data_ = nullptr;
    }
  }

  device_resource_ref resource_;
  cudaStream_t stream_ = nullptr;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ngemb
