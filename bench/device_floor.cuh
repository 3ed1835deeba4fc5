#pragma once
// The device benchmarks' memory-bandwidth floor: 1 GiB copied device to device on the benchmark's stream, its
// bandwidth counting read + write bytes, timed by its median in the benchmark's own run.
#include <cuda_runtime_api.h>

#include <cstddef>

#include "ngemb/cuda/error.cuh"
#include "ngemb/policy/device_buffer.cuh"
#include "ngemb/policy/device_policy.cuh"

#include "median.hpp"
#include "stream_timer.cuh"

namespace ngemb_bench {

class device_memcpy_floor {
 public:
  static constexpr std::size_t bytes = std::size_t{1} << 30;

  /// The buffers are allocated, filled, copied and freed on `stream`.
  device_memcpy_floor(cudaStream_t stream, stream_timer& timer)
      : stream_(stream),
        source_(ngemb::device_policy{}.on(stream), bytes),
        target_(ngemb::device_policy{}.on(stream), bytes) {
    NGEMB_CUDA_CHECK(cudaMemsetAsync(source_.data(), 1, bytes, stream_));
    NGEMB_CUDA_CHECK(cudaMemsetAsync(target_.data(), 0, bytes, stream_));
    NGEMB_CUDA_CHECK(cudaStreamSynchronize(stream_));
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
