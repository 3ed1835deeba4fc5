#pragma once
// cuBLAS for the device policy: failures become ngemb::cuda_error, and one handle per device and host thread is
// created on first use (creating a handle costs milliseconds; a forward runs a GEMM per call).
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "ngemb/core/error.hpp"
#include "ngemb/cuda/error.cuh"

namespace ngemb::detail {

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw cuda_error(static_cast<int>(status), std::string(call) + " at " + file + ":" + std::to_string(line),
                     cublasGetStatusString(status));
  }
}

inline constexpr int max_cublas_devices = 64;

struct cublas_handles {
  cublasHandle_t by_device[max_cublas_devices] = {};
  cublas_handles() = default;
  cublas_handles(const cublas_handles&) = delete;
  cublas_handles& operator=(const cublas_handles&) = delete;
  ~cublas_handles() {
    for (cublasHandle_t handle : by_device) {
      if (handle != nullptr) {
        cublasDestroy(handle);  // at thread exit nothing can report a failure
      }
    }
  }
};

/// The calling thread's handle for the current device.
inline cublasHandle_t cublas_handle() {
  thread_local cublas_handles cache;
  int device = 0;
  NGEMB_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= max_cublas_devices) {
    throw cuda_error(0, "cublas_handle", "device " + std::to_string(device) + " beyond the handle table");
  }
  cublasHandle_t& handle = cache.by_device[device];
  if (handle == nullptr) {
    check_cublas(cublasCreate(&handle), "cublasCreate", __FILE__, __LINE__);
  }
  return handle;
}

}  // namespace ngemb::detail
