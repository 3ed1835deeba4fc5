#pragma once
// Exact x mod m for 64-bit x and 32-bit m without a hardware divide (which is slow on CPUs and emulated on GPUs).
#include <cstdint>
#if defined(_MSC_VER)
#include <intrin.h>
#endif

#include "ngemb/core/macros.hpp"

namespace ngemb::detail {

/// mu = floor((2^64 - 1) / m): the estimate floor(x * mu / 2^64) is the true quotient or one less, so one
/// conditional subtraction finishes the reduction for every x < 2^64.
struct barrett_modulus {
  std::uint64_t modulus = 1;
  std::uint64_t reciprocal = ~std::uint64_t{0};

  barrett_modulus() = default;
  explicit barrett_modulus(std::uint32_t m) : modulus(m), reciprocal(~std::uint64_t{0} / m) {}

  NGEMB_HD std::uint64_t reduce(std::uint64_t x) const {
#if NGEMB_IN_DEVICE_CODE
    const std::uint64_t quotient = __umul64hi(x, reciprocal);
#elif defined(_MSC_VER)
    const std::uint64_t quotient = __umulh(x, reciprocal);
#else
    __extension__ using wide = unsigned __int128;  // a GNU extension; __extension__ keeps -Wpedantic quiet
    const auto quotient = static_cast<std::uint64_t>((static_cast<wide>(x) * reciprocal) >> 64);
#endif
    std::uint64_t remainder = x - quotient * modulus;
    if (remainder >= modulus) {
      remainder -= modulus;
    }
    return remainder;
  }
};

}  // namespace ngemb::detail
