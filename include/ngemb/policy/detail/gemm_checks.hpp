#pragma once
// What the host (Eigen) and device (cuBLAS) GEMM dispatches share: the element types and the shape checks.
#include <cstddef>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"

namespace ngemb {

/// Element types the GEMM dispatch accepts (fp32 is the accumulator of every forward; fp64 serves references).
template <class T>
concept gemm_scalar = std::is_same_v<T, float> || std::is_same_v<T, double>;

namespace detail {

inline void check_gemm_shapes(std::size_t m, std::size_t n, std::size_t k, std::size_t a, std::size_t b,
                              std::size_t c) {
  const auto fail = [&](const char* operand, std::size_t got, std::size_t rows, std::size_t columns) {
    throw shape_mismatch(std::string("gemm_nt: ") + operand + " must hold " + std::to_string(rows) + " x " +
                         std::to_string(columns) + " = " + std::to_string(rows * columns) + " values, got " +
                         std::to_string(got));
  };
  if (a != m * k) {
    fail("A", a, m, k);
  }
  if (b != n * k) {
    fail("B", b, n, k);
  }
  if (c != m * n) {
    fail("C", c, m, n);
  }
}

/// The strided gemm_nt's operands: A [m x k] and C [m x n] dense, B [n x k] with rows `ldb` >= k elements apart (a
/// view that ends with B's last row: a block of columns of a wider weight matrix).
inline void check_gemm_nt_strided_shapes(std::size_t m, std::size_t n, std::size_t k, std::size_t a, std::size_t b,
                                         std::size_t ldb, std::size_t c) {
  if (ldb < k) {
    throw invalid_argument("gemm_nt: ldb must be >= k = " + std::to_string(k) + ", got " + std::to_string(ldb));
  }
  const std::size_t b_span = n == 0 || k == 0 ? 0 : (n - 1) * ldb + k;
  if (b != b_span) {
    std::string expected = "(";  // a named string, as in check_gemm_nn_shapes (g++ 12's -Wrestrict)
    expected += std::to_string(n) + " - 1) x " + std::to_string(ldb) + " + " + std::to_string(k) + " = " +
                std::to_string(b_span);
    throw shape_mismatch("gemm_nt: B must hold " + expected + " values, got " + std::to_string(b));
  }
  check_gemm_shapes(m, n, k, a, n * k, c);
}

/// gemm_nn's operands: A [m x k] and C [m x n] dense, B [k x n] with rows `ldb` >= n elements apart (a view that
/// ends with B's last row).
inline void check_gemm_nn_shapes(std::size_t m, std::size_t n, std::size_t k, std::size_t a, std::size_t b,
                                 std::size_t ldb, std::size_t c) {
  if (ldb < n) {
    throw invalid_argument("gemm_nn: ldb must be >= n = " + std::to_string(n) + ", got " + std::to_string(ldb));
  }
  const std::size_t b_span = k == 0 || n == 0 ? 0 : (k - 1) * ldb + n;
  const auto fail = [](const char* operand, std::size_t got, const std::string& expected) {
    throw shape_mismatch(std::string("gemm_nn: ") + operand + " must hold " + expected + " values, got " +
                         std::to_string(got));
  };
  if (a != m * k) {
    fail("A", a, std::to_string(m) + " x " + std::to_string(k) + " = " + std::to_string(m * k));
  }
  if (b != b_span) {
    // Appended to a named string: g++ 12 misreads "(" + std::string&& as an overlapping memcpy (-Wrestrict).
    std::string expected = "(";
    expected += std::to_string(k) + " - 1) x " + std::to_string(ldb) + " + " + std::to_string(n) + " = " +
                std::to_string(b_span);
    fail("B", b, expected);
  }
  if (c != m * n) {
    fail("C", c, std::to_string(m) + " x " + std::to_string(n) + " = " + std::to_string(m * n));
  }
}

}  // namespace detail

}  // namespace ngemb
