#pragma once
// Dense products under a policy. Every projection in ngemb is a Linear layer y = W x with W stored [out x in]
// row-major (the PyTorch layout), applied to a batch of rows: C[m x n] = A[m x k] * B[n x k]^T. On the host a few
// rows of A (a decode step) go through a streaming kernel that reads each weight once (detail/host_kernels.hpp);
// more rows run Eigen's blocked GEMM; both split across the policy's threads. device_policy.cuh adds the cuBLAS
// overloads. gemm_nn (C = A * B, B's rows a stride apart) multiplies by stored rows rather than weights
// (attention). Weights may also be bf16 or fp16: activations stay fp32 and the products accumulate in fp32.
#include <Eigen/Core>

#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/detail/gemm_checks.hpp"
#include "ngemb/policy/detail/host_kernels.hpp"
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

/// Weights below which a second thread costs more than it saves in the streaming, memory-bound path (1M weights
/// take ~100 us to stream, a thread start tens of microseconds).
inline constexpr std::size_t min_streamed_weights_per_thread = std::size_t{1} << 20;

/// C = A * B^T for few rows of A (decode) through the streaming kernel (detail/host_kernels.hpp); the rows of B are
/// split over the threads their bytes or multiply-adds pay for, in runs of 8 (the one-row kernel's tile).
template <class W>
void small_gemm(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k, const float* a, const W* b,
                std::size_t ldb, float* c) {
  const std::size_t wanted = std::max(n * k / min_streamed_weights_per_thread, m * n * k / min_gemm_work_per_thread);
  const std::size_t groups = (n + 7) / 8;
  const std::size_t workers = std::clamp<std::size_t>(wanted, 1, std::min<std::size_t>(policy.resolved_threads(), groups));
  // Scratch comes from the policy's resource, taken here on the caller's thread (a user resource need not be
  // thread-safe): one widened row per worker for the portable path.
  host_buffer<float> scratch(policy, std::is_same_v<W, float> ? 0 : workers * k, for_overwrite);
  for_each_n(host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
    const std::size_t first = std::min(n, groups * worker / workers * 8);
    const std::size_t last = std::min(n, groups * (worker + 1) / workers * 8);
    small_gemm_rows(m, k, a, b, ldb, c, n, first, last, scratch.data() == nullptr ? nullptr : scratch.data() + worker * k);
  });
}

#ifdef NGEMB_HOST_X86_KERNELS
/// Whether many rows of A take the packed AVX2 kernel (detail/host_kernels.hpp) rather than Eigen's.
inline bool use_packed_gemm() { return host_isa_limit().load(std::memory_order_relaxed) == host_isa::avx2_fma; }

/// C = A * B^T for many rows of A through the packed kernel, split over the threads its work pays for: by rows of B
/// (columns of C, in whole micro-panels) when there are enough of them, else by rows of A. Each worker packs its
/// own panels.
template <class W>
void packed_gemm(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k, const float* a, const W* b,
                 std::size_t ldb, float* c) {
  const std::size_t micro_panels = (n + packed_gemm_nr - 1) / packed_gemm_nr;
  const std::size_t workers = std::clamp<std::size_t>(m * n * k / min_gemm_work_per_thread, 1,
                                                      std::min<std::size_t>(policy.resolved_threads(), std::max(m, micro_panels)));
  // Packing scratch from the policy's resource, taken on the caller's thread (a user resource need not be
  // thread-safe).
  host_buffer<float> scratch(policy, workers * packed_gemm_scratch, for_overwrite);
  const bool split_columns = micro_panels >= 4 * workers || micro_panels >= m;
  for_each_n(host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
    float* const own = scratch.data() + worker * packed_gemm_scratch;
    if (split_columns) {
      const std::size_t first = std::min(n, micro_panels * worker / workers * packed_gemm_nr);
      const std::size_t last = std::min(n, micro_panels * (worker + 1) / workers * packed_gemm_nr);
      packed_gemm_columns_avx2(m, k, a, b, ldb, c, n, first, last, own);
    } else {
      const std::size_t first = m * worker / workers;
      const std::size_t last = m * (worker + 1) / workers;
      packed_gemm_columns_avx2(last - first, k, a + first * k, b, ldb, c + first * n, n, 0, n, own);
    }
  });
}
#endif

/// C = A * B^T (m, n, k > 0) through the library's own kernels where they apply: the streaming kernel for few rows
/// of A (Eigen would pack all of B for them), the packed kernel where the CPU has AVX2. False: Eigen's turn.
template <class W>
bool run_own_kernel(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k, const float* a, const W* b,
                    std::size_t ldb, float* c) {
  if (m <= small_gemm_max_rows) {
    small_gemm(policy, m, n, k, a, b, ldb, c);
    return true;
  }
#ifdef NGEMB_HOST_X86_KERNELS
  if (use_packed_gemm()) {
    packed_gemm(policy, m, n, k, a, b, ldb, c);
    return true;
  }
#endif
  return false;
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
  if constexpr (std::is_same_v<T, float>) {
    if (run_own_kernel(policy, m, n, k, a, b, ldb, c)) {
      return;
    }
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

namespace detail {

/// C = A * B^T for fp32 A and C and bf16/fp16 B with rows `ldb` apart; shapes checked by the callers. Up to
/// small_gemm_max_rows rows of A the streaming kernel reads each weight once; larger batches widen blocks of B's rows
/// into per-thread fp32 panels and multiply them with Eigen's blocked kernel. Threads split the rows of B.
template <reduced_weight W>
void mixed_gemm_rows(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k, const float* a,
                     const W* b, std::size_t ldb, float* c) {
  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<row_major> result(c, static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(n));
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0) {
    result.setZero();
    return;
  }
  if (run_own_kernel(policy, m, n, k, a, b, ldb, c)) {
    return;
  }
  const Eigen::Map<const row_major> lhs(a, static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(k));
  const std::size_t block_rows = std::min(n, mixed_gemm_block_rows(k));
  const std::size_t blocks = (n + block_rows - 1) / block_rows;
  // Widening a weight costs about as much as a multiply-add per row of A: it counts in the work split.
  const std::size_t work = (m + 1) * n * k;
  const std::size_t workers = std::clamp<std::size_t>(work / min_gemm_work_per_thread, 1,
                                                      std::min<std::size_t>(policy.resolved_threads(), blocks));
  host_buffer<float> scratch(policy, workers * block_rows * k, for_overwrite);  // a panel per worker
  for_each_n(host_policy{static_cast<unsigned>(workers), 1}, workers, [&](std::size_t worker) {
    float* const panel = scratch.data() + worker * block_rows * k;
    for (std::size_t block = blocks * worker / workers; block < blocks * (worker + 1) / workers; ++block) {
      const std::size_t first = block * block_rows;
      const std::size_t rows = std::min(block_rows, n - first);
      for (std::size_t row = 0; row < rows; ++row) {
        const widen_op<W> widen{b + (first + row) * ldb, panel + row * k};
        for (std::size_t l = 0; l < k; ++l) {
          widen(l);
        }
      }
      const Eigen::Map<const row_major> widened(panel, static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(k));
      result.middleCols(static_cast<Eigen::Index>(first), static_cast<Eigen::Index>(rows)).noalias() =
          lhs * widened.transpose();
    }
  });
}

}  // namespace detail

/// C = A * B^T with fp32 A [m x k], reduced-precision B [n x k] (bf16 or fp16 weights) and fp32 C [m x n], B read
/// once and products accumulated in fp32 (detail::mixed_gemm_rows).
template <reduced_weight W>
void gemm_nt(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const float>> a, view<const W> b, view<float> c) {
  detail::check_gemm_shapes(m, n, k, a.size(), b.size(), c.size());
  detail::mixed_gemm_rows(policy, m, n, k, a.data(), b.data(), k, c.data());
}

/// As above with B's rows `ldb` >= k elements apart (a block of columns of a wider weight matrix).
template <reduced_weight W>
void gemm_nt(const host_policy& policy, std::size_t m, std::size_t n, std::size_t k,
             std::type_identity_t<view<const float>> a, view<const W> b, std::size_t ldb, view<float> c) {
  detail::check_gemm_nt_strided_shapes(m, n, k, a.size(), b.size(), ldb, c.size());
  detail::mixed_gemm_rows(policy, m, n, k, a.data(), b.data(), ldb, c.data());
}

}  // namespace ngemb
