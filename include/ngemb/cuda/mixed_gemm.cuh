#pragma once
// The small-batch kernel of the device mixed-precision GEMM (C = A * B^T, fp32 A and C, bf16/fp16 B): one warp
// per row of B, which it reads once while accumulating the dot products with every row of A (a decode batch, so
// A stays in L1/L2). Larger batches widen B into scratch and call cuBLAS instead (device_policy.cuh).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>

#include "ngemb/core/dtype.hpp"

namespace ngemb::detail {

/// Rows of A the warp kernel accumulates in registers; larger batches take the cuBLAS path.
inline constexpr int mixed_gemm_max_rows = 8;
inline constexpr int mixed_gemm_warps_per_block = 8;
/// Weights per 16-byte load.
inline constexpr int mixed_gemm_vector = 8;

/// B's rows are `ldb` weights apart. `Vectorised`: k and ldb are multiples of 8 and B 16-byte aligned, so each lane
/// loads 8 weights at once.
template <class W, bool Vectorised>
__global__ void mixed_gemm_small_m_kernel(int m, std::size_t n, std::size_t k, const float* a, const W* b,
                                          std::size_t ldb, float* c) {
  constexpr int warp = 32;
  const std::size_t row = static_cast<std::size_t>(blockIdx.x) * mixed_gemm_warps_per_block + threadIdx.x / warp;
  const int lane = static_cast<int>(threadIdx.x % warp);
  if (row >= n) {
    return;  // whole warps leave together: row is uniform across a warp
  }
  const W* weights = b + row * ldb;
  float sums[mixed_gemm_max_rows] = {};
  const auto accumulate = [&](float weight, std::size_t column) {
#pragma unroll
    for (int r = 0; r < mixed_gemm_max_rows; ++r) {
      if (r < m) {
        sums[r] += weight * a[static_cast<std::size_t>(r) * k + column];
      }
    }
  };
  if constexpr (Vectorised) {
    for (std::size_t chunk = static_cast<std::size_t>(lane); chunk < k / mixed_gemm_vector; chunk += warp) {
      const uint4 packed = reinterpret_cast<const uint4*>(weights)[chunk];
      W unpacked[mixed_gemm_vector];
      std::memcpy(unpacked, &packed, sizeof(packed));
#pragma unroll
      for (int j = 0; j < mixed_gemm_vector; ++j) {
        accumulate(to_float(unpacked[j]), chunk * mixed_gemm_vector + static_cast<std::size_t>(j));
      }
    }
  } else {
    for (std::size_t column = static_cast<std::size_t>(lane); column < k; column += warp) {
      accumulate(to_float(weights[column]), column);
    }
  }
#pragma unroll
  for (int r = 0; r < mixed_gemm_max_rows; ++r) {
    for (int offset = warp / 2; offset > 0; offset /= 2) {
      sums[r] += __shfl_down_sync(0xffffffffu, sums[r], offset);
    }
    if (lane == 0 && r < m) {
      c[static_cast<std::size_t>(r) * n + row] = sums[r];
    }
  }
}

}  // namespace ngemb::detail
