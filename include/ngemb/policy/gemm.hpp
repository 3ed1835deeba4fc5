#pragma once
// Dense products under a policy. Every projection in ngemb is a Linear layer y = W x with W stored [out x in]
// row-major (the PyTorch layout), applied to a batch of rows: C[m x n] = A[m x k] * B[n x k]^T. On the host this
// runs Eigen's blocked GEMM, split across the policy's threads; device_policy.cuh adds the cuBLAS overload.
#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/detail/gemm_checks.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

namespace detail {

/// Multiply-adds below which a second thread costs more than it saves.
inline constexpr std::size_t min_gemm_work_per_thread = std::size_t{1} << 22;

}  // namespace detail

/// C = A * B^T with A [m x k], B [n x k] and C [m x n], all row-major in the policy's memory.
template <gemm_scalar T>
void gemm_nt(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const T>> a, std::type_identity_t<view<const T>> b, view<T> c) {
  detail::check_gemm_shapes(m, n, k, a.size(), b.size(), c.size());
  using row_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const row_major> lhs(a.data(), static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(k));
  const Eigen::Map<const row_major> rhs(b.data(), static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(k));
  Eigen::Map<row_major> result(c.data(), static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(n));
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {
    result.setZero();
    return;
  }
  // Split the larger output dimension: rows of A for a prefill, rows of B (output features) for a decode batch.
  const std::size_t work = m * n * k;
  const std::size_t workers = std::clamp<std::size_t>(work / detail::min_gemm_work_per_thread, 1,
                                                      std::min<std::size_t>(policy.resolved_threads(), std::max(m, n)));
  const bool split_rows = m >= n;
  const std::size_t extent = split_rows ? m : n;
  for_each_n(host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
    const auto begin = static_cast<Eigen::Index>(extent * worker / workers);
    const auto count = static_cast<Eigen::Index>(extent * (worker + 1) / workers) - begin;
    if (split_rows) {
      result.middleRows(begin, count).noalias() = lhs.middleRows(begin, count) * rhs.transpose();
    } else {
      result.middleCols(begin, count).noalias() = lhs * rhs.middleRows(begin, count).transpose();
    }
  });
}

}  // namespace ngemb
