#pragma once
// Device memory owned by RAII: freed exactly once, movable, never copied implicitly. A buffer made for a policy
// is stream-ordered (cudaMallocAsync / cudaFreeAsync on the policy's stream), so creating and dropping scratch
// buffers per call never synchronises the device the way cudaFree does.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
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
      const std::size_t bytes = checked_bytes<T>(size_, "device_buffer");
      check_allocation(cudaMalloc(reinterpret_cast<void**>(&data_), bytes), bytes, "cudaMalloc");
    }
  }

  /// Memory ordered on `policy.stream`: valid for work queued after this call on that stream, returned to the
  /// stream's pool when the buffer dies (after the work queued before that).
  template <class Policy>
    requires requires(const Policy& policy) { cudaStream_t{policy.stream}; }
  device_buffer(const Policy& policy, std::size_t size) : size_(size), stream_(policy.stream), stream_ordered_(true) {
    if (size_ != 0) {
      const std::size_t bytes = checked_bytes<T>(size_, "device_buffer");
      check_allocation(cudaMallocAsync(reinterpret_cast<void**>(&data_), bytes, stream_), bytes, "cudaMallocAsync");
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
  /// Running out of device memory is out_of_memory, as on the host, so callers that can name the sizes to lower
  /// catch one type; any other failure is a cuda_error.
  static void check_allocation(cudaError_t status, std::size_t bytes, const char* call) {
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not a sticky error: clear it so the next call does not report it again
      throw out_of_memory(std::string("device_buffer: ") + call + " cannot allocate " + std::to_string(bytes) +
                          " bytes");
    }
    cuda::check(status, call, __FILE__, __LINE__);
  }

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
