#pragma once
// The device execution policy: element operations run in a grid-stride kernel on a CUDA stream. Include this
// header only from nvcc-compiled code.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/detail/fp8_gemm_ops.hpp"
#include "ngemb/policy/detail/gemm_checks.hpp"
#include "ngemb/policy/detail/mixed_gemm_ops.hpp"
#include "ngemb/policy/detail/sort_pairs.hpp"
#include "ngemb/cuda/cublas.cuh"
#include "ngemb/cuda/error.cuh"
#include "ngemb/cuda/fp8_gemm.cuh"
#include "ngemb/cuda/for_each.cuh"
#include "ngemb/cuda/mixed_gemm.cuh"
#include "ngemb/policy/device_buffer.cuh"
#include "ngemb/policy/device_memory_resource.cuh"
#include "ngemb/policy/policy.hpp"

namespace ngemb {

/// Aggregate (device_policy{stream}) or built as Thrust's par(alloc).on(stream):
/// device_policy{}.on(stream).with(pool).
struct device_policy {
  cudaStream_t stream = nullptr;
  int threads_per_block = 256;
  /// Where the policy's buffers and scratch come from, on `stream` (default: default_device_resource).
  device_resource_ref resource{};

  template <class T>
  using buffer = device_buffer<T>;

  /// This policy issuing its work, and ordering its memory, on `queue`.
  [[nodiscard]] device_policy on(cudaStream_t queue) const {
    device_policy changed = *this;
    changed.stream = queue;
    return changed;
  }
  /// This policy drawing its buffers and scratch from `memory`.
  [[nodiscard]] device_policy with(device_resource_ref memory) const {
    device_policy changed = *this;
    changed.resource = memory;
    return changed;
  }
};

inline device_resource_ref get_memory_resource(const device_policy& policy) { return policy.resource; }

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
  detail::for_each_kernel<<<static_cast<unsigned>(blocks), policy.threads_per_block, 0, policy.stream>>>(n, op);
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

namespace detail {

/// C = A * B^T with B's rows `ldb` elements apart, by cuBLAS on the policy's stream (shapes checked by the
/// callers). Row-major C is column-major C^T = B * A^T, so B goes first, transposed, with leading dimension ldb.
/// Full fp32 (or fp64) math: cuBLAS's default mode, never TF32.
template <gemm_scalar T>
void gemm_nt_rows(const device_policy& policy, std::size_t m, std::size_t n, std::size_t k, const T* a, const T* b,
                  std::size_t ldb, T* c) {
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {
    NGEMB_CUDA_CHECK(cudaMemsetAsync(c, 0, m * n * sizeof(T), policy.stream));
    return;
  }
  constexpr std::size_t largest = static_cast<std::size_t>(std::numeric_limits<int>::max());
  if (m > largest || n > largest || k > largest || ldb > largest) {
    throw invalid_argument("gemm_nt: cuBLAS takes dimensions below 2^31, got " + std::to_string(m) + " x " +
                           std::to_string(n) + " x " + std::to_string(k) + " (ldb " + std::to_string(ldb) + ")");
  }
  const cublasHandle_t handle = cublas_handle();
  check_cublas(cublasSetStream(handle, policy.stream), "cublasSetStream", __FILE__, __LINE__);
  const T one = 1;
  const T zero = 0;
  const int rows = static_cast<int>(n);
  const int columns = static_cast<int>(m);
  const int depth = static_cast<int>(k);
  const int stride = static_cast<int>(ldb);
  if constexpr (std::is_same_v<T, float>) {
    check_cublas(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, rows, columns, depth, &one, b, stride, a, depth,
                             &zero, c, rows),
                 "cublasSgemm", __FILE__, __LINE__);
  } else {
    check_cublas(cublasDgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, rows, columns, depth, &one, b, stride, a, depth,
                             &zero, c, rows),
                 "cublasDgemm", __FILE__, __LINE__);
  }
}

}  // namespace detail

/// C = A * B^T with A [m x k], B [n x k] and C [m x n] row-major in device memory, by cuBLAS on the policy's stream.
template <gemm_scalar T>
void gemm_nt(const device_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const T>> a, std::type_identity_t<view<const T>> b, view<T> c) {
  detail::check_gemm_shapes(m, n, k, a.size(), b.size(), c.size());
  detail::gemm_nt_rows(policy, m, n, k, a.data(), b.data(), k, c.data());
}

/// As above with B's rows `ldb` >= k elements apart (a block of columns of a wider weight matrix).
template <gemm_scalar T>
void gemm_nt(const device_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const T>> a, std::type_identity_t<view<const T>> b, std::size_t ldb,
             view<T> c) {
  detail::check_gemm_nt_strided_shapes(m, n, k, a.size(), b.size(), ldb, c.size());
  detail::gemm_nt_rows(policy, m, n, k, a.data(), b.data(), ldb, c.data());
}

/// C = A * B with A [m x k] and C [m x n] dense and B [k x n] with rows `ldb` apart, row-major in device memory, by
/// cuBLAS on the policy's stream: row-major C is column-major C^T = B^T * A^T, and row-major B with stride ldb is
/// column-major B^T with leading dimension ldb. Full fp32 (or fp64) math, as gemm_nt.
template <gemm_scalar T>
void gemm_nn(const device_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const T>> a, std::type_identity_t<view<const T>> b, std::size_t ldb,
             view<T> c) {
  detail::check_gemm_nn_shapes(m, n, k, a.size(), b.size(), ldb, c.size());
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {
    NGEMB_CUDA_CHECK(cudaMemsetAsync(c.data(), 0, m * n * sizeof(T), policy.stream));
    return;
  }
  constexpr std::size_t largest = static_cast<std::size_t>(std::numeric_limits<int>::max());
  if (m > largest || n > largest || k > largest || ldb > largest) {
    throw invalid_argument("gemm_nn: cuBLAS takes dimensions below 2^31, got " + std::to_string(m) + " x " +
                           std::to_string(n) + " x " + std::to_string(k) + " with ldb " + std::to_string(ldb));
  }
  const cublasHandle_t handle = detail::cublas_handle();
  detail::check_cublas(cublasSetStream(handle, policy.stream), "cublasSetStream", __FILE__, __LINE__);
  const T one = 1;
  const T zero = 0;
  const int rows = static_cast<int>(n);
  const int columns = static_cast<int>(m);
  const int depth = static_cast<int>(k);
  const int stride = static_cast<int>(ldb);
  if constexpr (std::is_same_v<T, float>) {
    detail::check_cublas(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, rows, columns, depth, &one, b.data(), stride,
                                     a.data(), depth, &zero, c.data(), rows),
                         "cublasSgemm", __FILE__, __LINE__);
  } else {
    detail::check_cublas(cublasDgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, rows, columns, depth, &one, b.data(), stride,
                                     a.data(), depth, &zero, c.data(), rows),
                         "cublasDgemm", __FILE__, __LINE__);
  }
}

namespace detail {

/// C = A * B^T with fp32 A [m x k], bf16/fp16 B [n x k] (rows `ldb` apart) and fp32 C [m x n] in device memory,
/// fp32 accumulation; shapes checked by the callers. Up to 8 rows of A (decode): a warp per row of B reads it once
/// (cuda/mixed_gemm.cuh). More rows: B is widened to fp32 in stream-ordered scratch and cuBLAS runs the fp32 GEMM,
/// whose time then dominates the extra pass.
template <reduced_weight W>
void mixed_gemm_rows(const device_policy& policy, std::size_t m, std::size_t n, std::size_t k, const float* a,
                     const W* b, std::size_t ldb, float* c) {
  if (m == 0 || n == 0) {
    return;
  }
  if (m > static_cast<std::size_t>(mixed_gemm_max_rows) || k == 0) {
    device_buffer<float> widened(policy, n * k);
    if (k != 0) {
      for_each_n(policy, n * k, widen_rows_op<W>{b, widened.data(), k, ldb});
    }
    gemm_nt_rows<float>(policy, m, n, k, a, widened.data(), k, c);
    return;
  }
  const std::size_t blocks = (n + mixed_gemm_warps_per_block - 1) / mixed_gemm_warps_per_block;
  if (blocks > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw invalid_argument("gemm_nt: B has " + std::to_string(n) + " rows, more than the kernel's grid covers");
  }
  constexpr int threads = mixed_gemm_warps_per_block * 32;
  const bool vectorised = k % mixed_gemm_vector == 0 && ldb % mixed_gemm_vector == 0 &&
                          reinterpret_cast<std::uintptr_t>(b) % 16 == 0;
  const auto rows = static_cast<int>(m);
  if (vectorised) {
    mixed_gemm_small_m_kernel<W, true><<<static_cast<unsigned>(blocks), threads, 0, policy.stream>>>(rows, n, k, a, b,
                                                                                                   ldb, c);
  } else {
    mixed_gemm_small_m_kernel<W, false><<<static_cast<unsigned>(blocks), threads, 0, policy.stream>>>(rows, n, k, a,
                                                                                                    b, ldb, c);
  }
  NGEMB_CUDA_CHECK(cudaGetLastError());
}

}  // namespace detail

/// C = A * B^T with fp32 A [m x k], bf16/fp16 B [n x k] and fp32 C [m x n] in device memory, fp32 accumulation
/// (detail::mixed_gemm_rows).
template <reduced_weight W>
void gemm_nt(const device_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const float>> a, view<const W> b, view<float> c) {
  detail::check_gemm_shapes(m, n, k, a.size(), b.size(), c.size());
  detail::mixed_gemm_rows(policy, m, n, k, a.data(), b.data(), k, c.data());
}

/// As above with B's rows `ldb` >= k elements apart (a block of columns of a wider weight matrix).
template <reduced_weight W>
void gemm_nt(const device_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const float>> a, view<const W> b, std::size_t ldb, view<float> c) {
  detail::check_gemm_nt_strided_shapes(m, n, k, a.size(), b.size(), ldb, c.size());
  detail::mixed_gemm_rows(policy, m, n, k, a.data(), b.data(), ldb, c.data());
}

/// C = A * dequant(B)^T with fp32 A [m x k], fp8 B [n x k], fp32 B_scale_inv [ceil(n/128) x ceil(k/128)] and fp32
/// C [m x n] in device memory (the layout and precondition of the host overload, policy/fp8_gemm.hpp), fp32
/// accumulation. Up to 8 rows of A: a warp per row of B reads it once (cuda/fp8_gemm.cuh). More rows: B is
/// dequantised to fp32 in stream-ordered scratch by the op the host shares, and cuBLAS runs the fp32 GEMM.
inline void gemm_nt(const device_policy& policy, std::size_t m, std::size_t n, std::size_t k,
                    std::type_identity_t<view<const float>> a, view<const fp8_e4m3> b,
                    std::type_identity_t<view<const float>> b_scale_inv, view<float> c) {
  detail::check_fp8_gemm_shapes(m, n, k, a.size(), b.size(), b_scale_inv.size(), c.size());
  if (m == 0 || n == 0) {
    return;
  }
  if (m > static_cast<std::size_t>(detail::fp8_gemm_max_rows) || k == 0) {
    device_buffer<float> dequantised(policy, n * k);
    for_each_n(policy, n * k,
               detail::fp8_dequantize_op{b.data(), b_scale_inv.data(), k, 0, 0, k, dequantised.data()});
    gemm_nt<float>(policy, m, n, k, a, view<const float>(dequantised.as_view()), c);
    return;
  }
  const std::size_t blocks = (n + detail::fp8_gemm_warps_per_block - 1) / detail::fp8_gemm_warps_per_block;
  if (blocks > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw invalid_argument("gemm_nt: B has " + std::to_string(n) + " rows, more than the kernel's grid covers");
  }
  constexpr int threads = detail::fp8_gemm_warps_per_block * 32;
  const bool vectorised = k % detail::fp8_gemm_vector == 0 && reinterpret_cast<std::uintptr_t>(b.data()) % 16 == 0;
  const auto rows = static_cast<int>(m);
  if (vectorised) {
    detail::fp8_gemm_small_m_kernel<true><<<static_cast<unsigned>(blocks), threads, 0, policy.stream>>>(
        rows, n, k, a.data(), b.data(), b_scale_inv.data(), c.data());
  } else {
    detail::fp8_gemm_small_m_kernel<false><<<static_cast<unsigned>(blocks), threads, 0, policy.stream>>>(
        rows, n, k, a.data(), b.data(), b_scale_inv.data(), c.data());
  }
  NGEMB_CUDA_CHECK(cudaGetLastError());
}

/// The device overload of sort_pairs (policy/detail/sort_pairs.hpp): CUB's stable radix sort over bits
/// [0, key_bits), on the policy's stream, `temp` grown to what CUB asks for.
template <class Key, class Value>
void sort_pairs(const device_policy& policy, view<const Key> keys_in, view<const Value> values_in, view<Key> keys_out,
                view<Value> values_out, int key_bits, device_buffer<std::byte>& temp) {
  detail::check_sort_pairs_sizes(keys_in.size(), values_in.size(), keys_out.size(), values_out.size());
  if (keys_in.empty()) {
    return;
  }
  std::size_t bytes = 0;
  const auto sort = [&](void* storage) {
    NGEMB_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(storage, bytes, keys_in.data(), keys_out.data(), values_in.data(),
                                                     values_out.data(), keys_in.size(), 0, key_bits, policy.stream));
  };
  sort(nullptr);
  if (temp.size() < bytes) {
    temp = device_buffer<std::byte>(policy, bytes);
  }
  sort(temp.data());
}

/// Eight elements per thread: one 16-byte load of a bf16 row, and enough threads for a decode batch of one.
constexpr std::size_t row_chunk(const device_policy& /*policy*/) { return 8; }

/// Threads are cheap on a device: the launch does not depend on the work per operation.
inline const device_policy& for_operations_of(const device_policy& policy, std::size_t /*elements*/) { return policy; }

inline void synchronize(const device_policy& policy) { NGEMB_CUDA_CHECK(cudaStreamSynchronize(policy.stream)); }

static_assert(detail::check_execution_policy<device_policy>());

}  // namespace ngemb
