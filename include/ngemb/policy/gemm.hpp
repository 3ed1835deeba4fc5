#pragma once
// Dense products under a policy. Every projection in ngemb is a Linear layer y = W x with W stored [out x in]
// row-major (the PyTorch layout), applied to a batch of rows: C[m x n] = A[m x k] * B[n x k]^T. On the host this
// runs Eigen's blocked GEMM, split across the policy's threads; device_policy.cuh adds the cuBLAS overload.
// gemm_nn (C = A * B, B's rows a stride apart) multiplies by stored rows rather than weights (attention).
// Weights may also be bf16 or fp16 (expert FFNs): activations stay fp32 and the products accumulate in fp32.
#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/detail/gemm_checks.hpp"
#include "ngemb/policy/detail/mixed_gemm_ops.hpp"
#include "ngemb/policy/host_buffer.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

namespace detail {

/// Multiply-adds below which a second thread costs more than it saves.
inline constexpr std::size_t min_gemm_work_per_thread = std::size_t{1} << 22;

/// Runs a host GEMM's output in blocks over the threads its work pays for, splitting the larger output dimension:
/// rows of A for a prefill, columns of C (rows of B^T) for a decode batch. block(split_rows, begin, count).
template <class Block>
void split_gemm(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k, const Block& block) {
  const std::size_t work = m * n * k;
  const std::size_t workers = std::clamp<std::size_t>(work / min_gemm_work_per_thread, 1,
                                                      std::min<std::size_t>(policy.resolved_threads(), std::max(m, n)));
  const bool split_rows = m >= n;
  const std::size_t extent = split_rows ? m : n;
  for_each_n(host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
    const auto begin = static_cast<Eigen::Index>(extent * worker / workers);
    const auto count = static_cast<Eigen::Index>(extent * (worker + 1) / workers) - begin;
    block(split_rows, begin, count);
  });
}

/// Rows of A up to which the mixed GEMM widens one weight row at a time (it stays in L1) and dots it with every row
/// of A; beyond, widening blocks for Eigen's kernels pays (measured on the Lite MoE shape, bench/moe.cpp).
inline constexpr std::size_t mixed_gemm_direct_rows = 16;
/// Weights below which a second thread costs more than it saves in the direct, memory-bound path (1M weights
/// take ~100 us to stream, a thread start tens of microseconds).
inline constexpr std::size_t min_mixed_weights_per_thread = std::size_t{1} << 20;

/// sum_l a[l] * b[l] in fp32, in independent partial sums the compiler vectorises.
inline float dot(const float* a, const float* b, std::size_t k) {
  constexpr std::size_t lanes = 16;
  float partial[lanes] = {};
  std::size_t l = 0;
  for (; l + lanes <= k; l += lanes) {
    for (std::size_t j = 0; j < lanes; ++j) {
      partial[j] += a[l + j] * b[l + j];
    }
  }
  float sum = 0.0f;
  for (const float value : partial) {
    sum += value;
  }
  for (; l < k; ++l) {
    sum += a[l] * b[l];
  }
  return sum;
}

/// Rows of B one block of the mixed GEMM widens at a time: 1 MiB of fp32, tall enough panels for Eigen's blocked
/// kernel, small enough to stay in L2/L3 between its widening and its use.
inline std::size_t mixed_gemm_block_rows(std::size_t k) { return std::max<std::size_t>(1, (std::size_t{1} << 18) / k); }

}  // namespace detail

namespace detail {

/// C = A * B^T with B's rows `ldb` elements apart; the shapes are checked by the callers.
template <gemm_scalar T>
void gemm_nt_rows(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k, const T* a, const T* b,
                  std::size_t ldb, T* c) {
  using row_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<row_major> result(c, static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(n));
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {
    result.setZero();
    return;
  }
  const Eigen::Map<const row_major> lhs(a, static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(k));
  const Eigen::Map<const row_major, Eigen::Unaligned, Eigen::OuterStride<>> rhs(
      b, static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(k), Eigen::OuterStride<>(static_cast<Eigen::Index>(ldb)));
  split_gemm(policy, m, n, k, [&](bool split_rows, Eigen::Index begin, Eigen::Index count) {
    if (split_rows) {
      result.middleRows(begin, count).noalias() = lhs.middleRows(begin, count) * rhs.transpose();
    } else {
      result.middleCols(begin, count).noalias() = lhs * rhs.middleRows(begin, count).transpose();
    }
  });
}

}  // namespace detail

/// C = A * B^T with A [m x k], B [n x k] and C [m x n], all row-major in the policy's memory.
template <gemm_scalar T>
void gemm_nt(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const T>> a, std::type_identity_t<view<const T>> b, view<T> c) {
  detail::check_gemm_shapes(m, n, k, a.size(), b.size(), c.size());
  detail::gemm_nt_rows(policy, m, n, k, a.data(), b.data(), k, c.data());
}

/// As above with B's rows `ldb` >= k elements apart: B is a block of columns of a wider weight matrix (a rank's
/// sub-tables of W_cat, store/sharded_store.hpp).
template <gemm_scalar T>
void gemm_nt(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const T>> a, std::type_identity_t<view<const T>> b, std::size_t ldb,
             view<T> c) {
  detail::check_gemm_nt_strided_shapes(m, n, k, a.size(), b.size(), ldb, c.size());
  detail::gemm_nt_rows(policy, m, n, k, a.data(), b.data(), ldb, c.data());
}

/// C = A * B with A [m x k] and C [m x n] row-major and dense, and B [k x n] row-major with its rows `ldb` elements
/// apart: a block of columns of a wider matrix (the c_kv part of latent cache rows, model/mla_attention.hpp).
template <gemm_scalar T>
void gemm_nn(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const T>> a, std::type_identity_t<view<const T>> b, std::size_t ldb,
             view<T> c) {
  detail::check_gemm_nn_shapes(m, n, k, a.size(), b.size(), ldb, c.size());
  using row_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<row_major> result(c.data(), static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(n));
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {
    result.setZero();
    return;
  }
  const Eigen::Map<const row_major> lhs(a.data(), static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(k));
  const Eigen::Map<const row_major, Eigen::Unaligned, Eigen::OuterStride<>> rhs(
      b.data(), static_cast<Eigen::Index>(k), static_cast<Eigen::Index>(n),
      Eigen::OuterStride<>(static_cast<Eigen::Index>(ldb)));
  detail::split_gemm(policy, m, n, k, [&](bool split_rows, Eigen::Index begin, Eigen::Index count) {
    if (split_rows) {
      result.middleRows(begin, count).noalias() = lhs.middleRows(begin, count) * rhs;
    } else {
      result.middleCols(begin, count).noalias() = lhs * rhs.middleCols(begin, count);
    }
  });
}

/// C = A * B^T with fp32 A [m x k], reduced-precision B [n x k] (bf16 or fp16 weights) and fp32 C [m x n], B read
/// once and products accumulated in fp32. Up to 16 rows of A, each row of B is widened alone and dotted with
/// every row of A (the work of a decode batch and of most experts' share of a prefill); larger batches widen
/// blocks of B's rows into per-thread fp32 scratch and multiply them with Eigen. Threads split the rows of B.
template <reduced_weight W>
void gemm_nt(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const float>> a, view<const W> b, view<float> c) {
  detail::check_gemm_shapes(m, n, k, a.size(), b.size(), c.size());
  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const row_major> lhs(a.data(), static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(k));
  Eigen::Map<row_major> result(c.data(), static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(n));
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {
    result.setZero();
    return;
  }
  if (m <= detail::mixed_gemm_direct_rows) {
    const std::size_t workers = std::clamp<std::size_t>(n * k / detail::min_mixed_weights_per_thread, 1,
                                                        std::min<std::size_t>(policy.resolved_threads(), n));
    // Scratch comes from the policy's resource, taken here on the caller's thread (a user resource need not be
    // thread-safe): one widened row per worker.
    host_buffer<float> scratch(policy, workers * k, for_overwrite);
    for_each_n(host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
      float* const widened = scratch.data() + worker * k;
      for (std::size_t row = n * worker / workers; row < n * (worker + 1) / workers; ++row) {
        const detail::widen_op<W> widen{b.data() + row * k, widened};
        for (std::size_t l = 0; l < k; ++l) {
          widen(l);
        }
        for (std::size_t i = 0; i < m; ++i) {
          c[i * n + row] = detail::dot(a.data() + i * k, widened, k);
        }
      }
    });
    return;
  }
  const std::size_t block_rows = std::min(n, detail::mixed_gemm_block_rows(k));
  const std::size_t blocks = (n + block_rows - 1) / block_rows;
  // Widening a weight costs about as much as a multiply-add per row of A: it counts in the work split.
  const std::size_t work = (m + 1) * n * k;
  const std::size_t workers = std::clamp<std::size_t>(work / detail::min_gemm_work_per_thread, 1,
                                                      std::min<std::size_t>(policy.resolved_threads(), blocks));
  host_buffer<float> scratch(policy, workers * block_rows * k, for_overwrite);  // a panel per worker
  for_each_n(host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
    float* const panel = scratch.data() + worker * block_rows * k;
    for (std::size_t block = blocks * worker / workers; block < blocks * (worker + 1) / workers; ++block) {
      const std::size_t first = block * block_rows;
      const std::size_t rows = std::min(block_rows, n - first);
      const detail::widen_op<W> widen{b.data() + first * k, panel};
      for (std::size_t i = 0; i < rows * k; ++i) {
        widen(i);
      }
      const Eigen::Map<const row_major> widened(panel, static_cast<Eigen::Index>(rows),
                                                static_cast<Eigen::Index>(k));
      result.middleCols(static_cast<Eigen::Index>(first), static_cast<Eigen::Index>(rows)).noalias() =
          lhs * widened.transpose();
    }
  });
}

}  // namespace ngemb
