#pragma once
// The device benchmarks' memory-bandwidth floor: 1 GiB copied device to device on the benchmark's stream, its
// bandwidth counting read + write bytes, timed by its median in the benchmark's own run.
#include <cuda_runtime_api.h>

#include <cstddef>

#include "ngemb/cuda/device_buffer.cuh"
#include "ngemb/cuda/error.cuh"

#include "median.hpp"
#include "stream_timer.cuh"

namespace ngemb_bench {

class device_memcpy_floor {
 public:
  static constexpr std::size_t bytes = std::size_t{1} << 30;

  device_memcpy_floor(cudaStream_t stream, stream_timer& timer) : stream_(stream), source_(bytes), target_(bytes) {
    NGEMB_CUDA_CHECK(cudaMemset(source_.data(), 1, bytes));
    NGEMB_CUDA_CHECK(cudaMemset(target_.data(), 0, bytes));
    NGEMB_CUDA_CHECK(cudaDeviceSynchronize());  // the memsets ran on the legacy stream
    auto run = [this] { copy(); };
    bandwidth_ = 2.0 * static_cast<double>(bytes) /
                 median_seconds([&](long calls) { return timer.seconds(stream_, run, calls); });
  }

  void copy() {
    NGEMB_CUDA_CHECK(cudaMemcpyAsync(target_.data(), source_.data(), bytes, cudaMemcpyDeviceToDevice, stream_));
  }

  /// Bytes per second, read + write.
  [[nodiscard]] double bandwidth() const { return bandwidth_; }

 private:
  cudaStream_t stream_;
  ngemb::device_buffer<std::byte> source_;
  ngemb::device_buffer<std::byte> target_;
  double bandwidth_ = 0;
};

}  // namespace ngemb_bench
