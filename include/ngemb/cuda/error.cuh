#pragma once
// Turns CUDA runtime failures into ngemb::cuda_error carrying the failed call and the runtime's message.
#include <cuda_runtime_api.h>

#include <string>

#include "ngemb/core/error.hpp"

namespace ngemb::detail {

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    throw cuda_error(static_cast<int>(status), std::string(call) + " at " + file + ":" + std::to_string(line),
                     cudaGetErrorString(status));
  }
}

}  // namespace ngemb::detail

#define NGEMB_CUDA_CHECK(call) ::ngemb::detail::check_cuda((call), #call, __FILE__, __LINE__)
