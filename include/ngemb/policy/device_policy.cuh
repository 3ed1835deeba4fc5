#pragma once
// The device execution policy: element operations run in a grid-stride kernel on a CUDA stream. Include this
// header only from nvcc-compiled code.
#include <cuda_runtime.h>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/cuda/device_buffer.cuh"
#include "ngemb/cuda/error.cuh"
#include "ngemb/cuda/for_each.cuh"

namespace ngemb {

struct device_policy {
  cudaStream_t stream = nullptr;
  int threads_per_block = 256;

  template <class T>
  using buffer = device_buffer<T>;
};

namespace detail {

/// The current device's SM count, asked once per device and host thread (launches happen per call).
inline int current_multiprocessor_count() {
  thread_local int cached_device = -1;
  thread_local int cached_count = 0;
  int device = 0;
  NGEMB_CUDA_CHECK(cudaGetDevice(&device));
  if (device != cached_device) {
    NGEMB_CUDA_CHECK(cudaDeviceGetAttribute(&cached_count, cudaDevAttrMultiProcessorCount, device));
    cached_device = device;
  }
  return cached_count;
}

}  // namespace detail

/// Runs `op(i)` for every i in [0, n) on the policy's stream; asynchronous, launch errors are thrown.
template <class Op>
  requires std::invocable<Op&, std::size_t>
void for_each_n(const device_policy& policy, std::size_t n, Op op) {
  if (n == 0) {
    return;
  }
  const int multiprocessors = detail::current_multiprocessor_count();
  const std::size_t wanted_blocks = (n + policy.threads_per_block - 1) / policy.threads_per_block;
  // A few resident blocks per SM saturate the machine; the grid-stride loop covers the rest.
  const std::size_t blocks = std::min<std::size_t>(wanted_blocks, static_cast<std::size_t>(multiprocessors) * 8);
  cuda::detail::for_each_kernel<<<static_cast<unsigned>(blocks), policy.threads_per_block, 0, policy.stream>>>(n, op);
  NGEMB_CUDA_CHECK(cudaGetLastError());
}

/// Copies host values into device memory on the policy's stream (stream-ordered; the source must stay alive
/// until the stream reaches the copy, which synchronize() guarantees).
template <class T>
void copy_to(const device_policy& policy, std::type_identity_t<view<const T>> source, view<T> destination) {
  detail::require_same_size("copy_to", source.size(), destination.size());
  NGEMB_CUDA_CHECK(cudaMemcpyAsync(destination.data(), source.data(), source.size() * sizeof(T),
                                   cudaMemcpyHostToDevice, policy.stream));
}

/// Copies device memory back to host values and waits for it.
template <class T>
void copy_to_host(const device_policy& policy, std::type_identity_t<view<const T>> source, view<T> destination) {
  detail::require_same_size("copy_to_host", source.size(), destination.size());
  NGEMB_CUDA_CHECK(cudaMemcpyAsync(destination.data(), source.data(), source.size() * sizeof(T),
                                   cudaMemcpyDeviceToHost, policy.stream));
  NGEMB_CUDA_CHECK(cudaStreamSynchronize(policy.stream));
}

inline void synchronize(const device_policy& policy) { NGEMB_CUDA_CHECK(cudaStreamSynchronize(policy.stream)); }

}  // namespace ngemb
