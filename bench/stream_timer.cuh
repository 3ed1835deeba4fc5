#pragma once
// Times work queued on a CUDA stream with a pair of events (what the device benchmarks report as manual time).
#include <cuda_runtime_api.h>

#include "ngemb/cuda/error.cuh"

namespace ngemb_bench {

class stream_timer {
 public:
  stream_timer() {
    NGEMB_CUDA_CHECK(cudaEventCreate(&start_));
    NGEMB_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  stream_timer(const stream_timer&) = delete;
  stream_timer& operator=(const stream_timer&) = delete;
  ~stream_timer() {
    cudaEventDestroy(start_);  // failures cannot be reported from a destructor
    cudaEventDestroy(stop_);
  }

  /// Seconds `calls` calls of `run` take on `stream`, between the two events.
  template <class Run>
  double seconds(cudaStream_t stream, Run&& run, long calls = 1) {
    NGEMB_CUDA_CHECK(cudaEventRecord(start_, stream));
    for (long call = 0; call < calls; ++call) {
      run();
    }
    NGEMB_CUDA_CHECK(cudaEventRecord(stop_, stream));
    NGEMB_CUDA_CHECK(cudaEventSynchronize(stop_));
    float milliseconds = 0;
    NGEMB_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, start_, stop_));
    return static_cast<double>(milliseconds) * 1e-3;
  }

 private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

}  // namespace ngemb_bench
