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

}  // namespace detail

}  // namespace ngemb
