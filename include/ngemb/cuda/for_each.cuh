#pragma once
// The grid-stride kernel behind for_each_n(device_policy, ...): the element operation is the kernel parameter.
#include <cuda_runtime.h>

#include <cstddef>

namespace ngemb::detail {

template <class Op>
__global__ void for_each_kernel(std::size_t n, Op op) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    op(i);
  }
}

}  // namespace ngemb::detail
