#pragma once
// The small-batch kernel of the device block-scaled fp8 product (C = A * dequant(B)^T, fp32 A and C, fp8 B with
// its fp32 scale_inv per 128 x 128 block): one warp per row of B, which it reads once while accumulating the dot
// products with every row of A (a decode batch, so A stays in L1/L2), as cuda/mixed_gemm.cuh does for bf16/fp16.
// Larger batches dequantise B into scratch and call cuBLAS instead (device_policy.cuh).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>

#include "ngemb/core/dtype.hpp"
#include "ngemb/policy/detail/fp8_gemm_ops.hpp"

namespace ngemb::detail {

/// Rows of A the warp kernel accumulates in registers; larger batches take the cuBLAS path.
inline constexpr int fp8_gemm_max_rows = 8;
inline constexpr int fp8_gemm_warps_per_block = 8;
/// Weights per 16-byte load; 16 divides 128, so one load never straddles two scale blocks.
inline constexpr int fp8_gemm_vector = 16;

/// `Vectorised`: k is a multiple of 16 and B 16-byte aligned, so each lane loads 16 weights at once.
template <bool Vectorised>
__global__ void fp8_gemm_small_m_kernel(int m, std::size_t n, std::size_t k, const float* a, const fp8_e4m3* b,
                                        const float* scale_inv, float* c) {
  constexpr int warp = 32;
  const std::size_t row = static_cast<std::size_t>(blockIdx.x) * fp8_gemm_warps_per_block + threadIdx.x / warp;
  const int lane = static_cast<int>(threadIdx.x % warp);
  if (row >= n) {
    return;  // whole warps leave together: row is uniform across a warp
  }
  const fp8_e4m3* weights = b + row * k;
  const float* scales = scale_inv + row / fp8_block_size * fp8_scale_blocks(k);
  float sums[fp8_gemm_max_rows] = {};
  const auto accumulate = [&](float weight, std::size_t column) {
#pragma unroll
    for (int r = 0; r < fp8_gemm_max_rows; ++r) {
      if (r < m) {
        sums[r] += weight * a[static_cast<std::size_t>(r) * k + column];
      }
    }
  };
  if constexpr (Vectorised) {
    for (std::size_t chunk = static_cast<std::size_t>(lane); chunk < k / fp8_gemm_vector; chunk += warp) {
      const uint4 packed = reinterpret_cast<const uint4*>(weights)[chunk];
      fp8_e4m3 unpacked[fp8_gemm_vector];
      std::memcpy(unpacked, &packed, sizeof(packed));
      const std::size_t first = chunk * fp8_gemm_vector;
      const float scale = scales[first / fp8_block_size];
#pragma unroll
      for (int j = 0; j < fp8_gemm_vector; ++j) {
        accumulate(to_float(unpacked[j]) * scale, first + static_cast<std::size_t>(j));
      }
    }
  } else {
    for (std::size_t column = static_cast<std::size_t>(lane); column < k; column += warp) {
      accumulate(to_float(weights[column]) * scales[column / fp8_block_size], column);
    }
  }
#pragma unroll
  for (int r = 0; r < fp8_gemm_max_rows; ++r) {
    for (int offset = warp / 2; offset > 0; offset /= 2) {
      sums[r] += __shfl_down_sync(0xffffffffu, sums[r], offset);
    }
    if (lane == 0 && r < m) {
      c[static_cast<std::size_t>(r) * n + row] = sums[r];
    }
  }
}

}  // namespace ngemb::detail
