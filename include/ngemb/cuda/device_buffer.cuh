#pragma once
// Device memory owned by RAII: freed exactly once, movable, never copied implicitly. A buffer made for a policy
// is stream-ordered (cudaMallocAsync / cudaFreeAsync on the policy's stream), so creating and dropping scratch
// buffers per call never synchronises the device the way cudaFree does.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "ngemb/core/checked.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/cuda/error.cuh"

namespace ngemb {

template <class T>
class device_buffer {
 public:
  device_buffer() = default;

  /// Plain cudaMalloc memory, usable from any stream.
  explicit device_buffer(std::size_t size) : size_(size) {
    if (size_ != 0) {
      NGEMB_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), checked_bytes<T>(size_, "device_buffer")));
    }
  }

  /// Memory ordered on `policy.stream`: valid for work queued after this call on that stream, returned to the
  /// stream's pool when the buffer dies (after the work queued before that).
  template <class Policy>
    requires requires(const Policy& policy) { cudaStream_t{policy.stream}; }
  device_buffer(const Policy& policy, std::size_t size) : size_(size), stream_(policy.stream), stream_ordered_(true) {
    if (size_ != 0) {
      NGEMB_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&data_), checked_bytes<T>(size_, "device_buffer"), stream_));
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
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    stream_ = other.stream_;
    stream_ordered_ = other.stream_ordered_;
  }

  void release() noexcept {
    if (data_ != nullptr) {
      // A failure cannot be reported from a destructor; the pointer is ours alone either way.
      if (stream_ordered_) {
        cudaFreeAsync(data_, stream_);
      } else {
        cudaFree(data_);
      }
      data_ = nullptr;
    }
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  cudaStream_t stream_ = nullptr;
  bool stream_ordered_ = false;
};

}  // namespace ngemb
