#pragma once
// Device memory owned by RAII: freed exactly once, movable, never copied implicitly.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "ngemb/core/views.hpp"
#include "ngemb/cuda/error.cuh"

namespace ngemb {

struct device_policy;

template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(std::size_t size) : size_(size) {
    if (size_ != 0) {
      NGEMB_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), size_ * sizeof(T)));
    }
  }
  device_buffer(const device_policy& /*policy*/, std::size_t size) : device_buffer(size) {}

  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  device_buffer& operator=(device_buffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
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
  void release() noexcept {
    if (data_ != nullptr) {
      cudaFree(data_);  // a failure here cannot be reported from a destructor; the pointer is ours alone
      data_ = nullptr;
    }
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ngemb
