#pragma once
// Page-locked host memory mapped into the device's address space, owned by RAII (freed exactly once, movable, never
// copied): the host reads and writes it through data(), kernels read it over the bus through device_data(). Include
// this header only from nvcc-compiled code.
//
// Allocated cacheable (cudaHostAllocMapped without cudaHostAllocWriteCombined): write-combined memory skips the
// PCIe snoop, which the CUDA guide credits with up to 40% on bulk copies, but the host then reads it uncached, an
// order of magnitude slower, and the owners of these buffers read them on the host (a checkpoint being saved); a
// device gathering rows of a few hundred bytes waits on the bus latency more than on the snoop.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "ngemb/core/checked.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/cuda/error.cuh"

namespace ngemb {

template <class T>
class mapped_host_buffer {
 public:
  mapped_host_buffer() = default;

  /// `size` values, not initialised, pinned and mapped for the current device. A host that cannot pin the bytes is
  /// out_of_memory naming them; a device that cannot map host memory, or any other CUDA failure, is a cuda_error.
  explicit mapped_host_buffer(std::size_t size) : size_(size) {
    if (size_ == 0) {
      return;
    }
    const std::size_t bytes = checked_bytes<T>(size_, "mapped_host_buffer");
    int device = 0;
    NGEMB_CUDA_CHECK(cudaGetDevice(&device));
    int can_map = 0;
    NGEMB_CUDA_CHECK(cudaDeviceGetAttribute(&can_map, cudaDevAttrCanMapHostMemory, device));
    if (can_map == 0) {
      throw cuda_error(static_cast<int>(cudaErrorNotSupported), "mapped_host_buffer",
                       "device " + std::to_string(device) + " cannot map host memory (cudaDevAttrCanMapHostMemory 0)");
    }
    void* host = nullptr;
    const cudaError_t pinned = cudaHostAlloc(&host, bytes, cudaHostAllocMapped);
    if (pinned == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not a sticky error: clear it so the next call does not report it again
      throw out_of_memory("mapped_host_buffer: cannot pin " + std::to_string(bytes) +
                          " bytes of host memory (cudaHostAlloc: " + cudaGetErrorString(pinned) +
                          "); the host's free memory or its locked-memory limit (ulimit -l) is too small");
    }
    NGEMB_CUDA_CHECK(pinned);
    host_ = static_cast<T*>(host);
    void* mapped = nullptr;
    const cudaError_t status = cudaHostGetDevicePointer(&mapped, host, 0);
    if (status != cudaSuccess) {
      release();
      NGEMB_CUDA_CHECK(status);
    }
    device_ = static_cast<const T*>(mapped);
  }

  mapped_host_buffer(const mapped_host_buffer&) = delete;
  mapped_host_buffer& operator=(const mapped_host_buffer&) = delete;
  mapped_host_buffer(mapped_host_buffer&& other) noexcept { take(other); }
  mapped_host_buffer& operator=(mapped_host_buffer&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  ~mapped_host_buffer() { release(); }

  [[nodiscard]] std::size_t size() const { return size_; }
  /// The host's address of the values.
  [[nodiscard]] T* data() { return host_; }
  [[nodiscard]] const T* data() const { return host_; }
  [[nodiscard]] view<T> as_view() { return {host_, size_}; }
  [[nodiscard]] view<const T> as_view() const { return {host_, size_}; }
  /// The device's address of the same values (read over the bus).
  [[nodiscard]] const T* device_data() const { return device_; }

 private:
  void take(mapped_host_buffer& other) noexcept {
    host_ = std::exchange(other.host_, nullptr);
    device_ = std::exchange(other.device_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }

  void release() noexcept {
    if (host_ != nullptr) {
      cudaFreeHost(host_);  // a failure cannot be reported from a destructor; the memory is ours alone
      host_ = nullptr;
      device_ = nullptr;
    }
  }

  T* host_ = nullptr;
  const T* device_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ngemb
