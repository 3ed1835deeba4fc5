#pragma once
// What the host and device fp8 tests share: an independent E4M3FN table (ldexp from the bit fields), random fp8
// weights and block scales, and the check of a block-scaled product against fp64 over the dequantised weights.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/policy/detail/fp8_gemm_ops.hpp"

namespace ngemb_test {

/// The value of an E4M3FN code from its fields, by ldexp (independent of the library's bit manipulation).
inline double fp8_reference_value(unsigned code) {
  const bool negative = (code & 0x80u) != 0;
  const unsigned exponent = (code >> 3) & 0xfu;
  const unsigned mantissa = code & 0x7u;
  if (exponent == 0xfu && mantissa == 0x7u) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  const double magnitude = exponent == 0 ? std::ldexp(static_cast<double>(mantissa), -9)
                                         : std::ldexp(1.0 + mantissa / 8.0, static_cast<int>(exponent) - 7);
  return negative ? -magnitude : magnitude;
}

/// The code nearest to `value` among the finite codes, ties to the even code, saturating to +-448: a search over
/// the table above, independent of the library's rounding.
inline unsigned fp8_nearest_code(float value) {
  unsigned best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (unsigned code = 0; code < 0x7f; ++code) {  // magnitudes; the sign is applied after
    const double distance = std::fabs(std::fabs(static_cast<double>(value)) - fp8_reference_value(code));
    if (distance < best_distance || (distance == best_distance && (code & 1u) == 0)) {
      best = code;
      best_distance = distance;
    }
  }
  return best | (std::signbit(value) ? 0x80u : 0u);
}

/// Random codes other than the NaNs.
inline std::vector<ngemb::fp8_e4m3> random_codes(std::size_t count, std::mt19937& random) {
  std::uniform_int_distribution<int> code(0, 253);
  std::vector<ngemb::fp8_e4m3> codes(count);
  for (auto& value : codes) {
    const int drawn = code(random);
    value = ngemb::fp8_e4m3::from_bits(static_cast<std::uint8_t>(drawn < 127 ? drawn : drawn + 1));  // skip 0x7f
  }
  return codes;
}

/// Positive block scales spread over 2^-12..2^2, as amax / 448 of real weights.
inline std::vector<float> random_scales(std::size_t count, std::mt19937& random) {
  std::uniform_real_distribution<float> exponent(-12.0f, 2.0f);
  std::vector<float> scales(count);
  for (float& scale : scales) {
    scale = std::exp2(exponent(random));
  }
  return scales;
}

inline std::vector<float> random_nonzero(std::size_t count, std::mt19937& random) {
  std::uniform_real_distribution<float> magnitude(0.05f, 1.0f);
  std::bernoulli_distribution negative(0.5);
  std::vector<float> values(count);
  for (float& value : values) {
    value = negative(random) ? -magnitude(random) : magnitude(random);
  }
  return values;
}

/// Checks C = A * dequant(B)^T against fp64 over the dequantised weights: |c - reference| <= (k + 2) * 2^-23 *
/// sum |a w| (fp32 rounding of each dequantised weight, product and sum; recursive summation's bound).
inline void check_product(std::size_t m, std::size_t n, std::size_t k, const std::vector<float>& a,
                   const std::vector<ngemb::fp8_e4m3>& b, const std::vector<float>& scale_inv,
                   const std::vector<float>& c) {
  const std::size_t column_blocks = ngemb::fp8_scale_blocks(k);
  std::size_t failures = 0;
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      double reference = 0.0;
      double magnitude = 0.0;
      for (std::size_t l = 0; l < k; ++l) {
        const double weight = fp8_reference_value(b[j * k + l].bits) *
                              scale_inv[j / ngemb::fp8_block_size * column_blocks + l / ngemb::fp8_block_size];
        reference += static_cast<double>(a[i * k + l]) * weight;
        magnitude += std::fabs(static_cast<double>(a[i * k + l]) * weight);
      }
      const double tolerance = static_cast<double>(k + 2) * std::ldexp(1.0, -23) * magnitude;
      if (!(std::fabs(c[i * n + j] - reference) <= tolerance) && ++failures <= 5) {
        INFO("m " << m << " n " << n << " k " << k << " at (" << i << ", " << j << "): " << c[i * n + j]
                  << " against " << reference << ", tolerance " << tolerance);
        CHECK(false);
      }
    }
  }
  CHECK(failures == 0);
}

}  // namespace ngemb_test
