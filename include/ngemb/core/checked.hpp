#pragma once
// Checked integer arithmetic for sizes that come from files or arguments: a product or sum that does not fit, or a
// value that does not fit the narrower type it is stored in, raises invalid_argument naming what was computed,
// instead of wrapping into a small allocation that a later write overruns.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "ngemb/core/error.hpp"

namespace ngemb {

/// `value` as To, or invalid_argument naming `what` when it does not fit (a negative size, a 64-bit count that a
/// 32-bit field would truncate).
template <std::integral To, std::integral From>
[[nodiscard]] To checked_cast(From value, std::string_view what) {
  if (!std::in_range<To>(value)) {
    throw invalid_argument(std::string(what) + " = " + std::to_string(value) + " is outside [" +
                           std::to_string(std::numeric_limits<To>::min()) + ", " +
                           std::to_string(std::numeric_limits<To>::max()) + "]");
  }
  return static_cast<To>(value);
}

/// a * b, or invalid_argument("<what>: a * b overflows") when the product does not fit T.
template <std::integral T>
[[nodiscard]] T checked_mul(T a, T b, std::string_view what) {
  T product{};
  if (__builtin_mul_overflow(a, b, &product)) {
    throw invalid_argument(std::string(what) + ": " + std::to_string(a) + " * " + std::to_string(b) +
                           " overflows a " + std::to_string(sizeof(T) * 8) + "-bit integer");
  }
  return product;
}

/// a + b, or invalid_argument naming `what` when the sum does not fit T.
template <std::integral T>
[[nodiscard]] T checked_add(T a, T b, std::string_view what) {
  T sum{};
  if (__builtin_add_overflow(a, b, &sum)) {
    throw invalid_argument(std::string(what) + ": " + std::to_string(a) + " + " + std::to_string(b) +
                           " overflows a " + std::to_string(sizeof(T) * 8) + "-bit integer");
  }
  return sum;
}

/// The product of sizes (elements of a tensor, bytes of a buffer), checked at every step.
template <std::integral... Sizes>
[[nodiscard]] std::size_t checked_product(std::string_view what, Sizes... sizes) {
  std::size_t product = 1;
  ((product = checked_mul(product, checked_cast<std::size_t>(sizes, what), what)), ...);
  return product;
}

/// Bytes of `count` values of T.
template <class T>
[[nodiscard]] std::size_t checked_bytes(std::size_t count, std::string_view what) {
  return checked_mul(count, sizeof(T), what);
}

}  // namespace ngemb
