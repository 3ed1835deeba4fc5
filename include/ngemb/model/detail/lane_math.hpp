#pragma once
// Arithmetic of the attention element operations written so a host compiler vectorises it without -ffast-math:
// sums over independent partial sums (a single running sum is a chain of dependent additions the compiler may not
// reorder) and an exp with no library call in it. Shared by host and device.
#include <cstdint>
#include <cstring>

#include "ngemb/core/macros.hpp"

namespace ngemb::detail {

/// Partial sums a reduction keeps: one AVX2 register of floats.
inline constexpr int reduction_lanes = 8;

/// partial[0] + ... + partial[7] as a tree (three dependent additions, not seven).
NGEMB_HD inline float sum_lanes(float (&partial)[reduction_lanes]) {
  for (int j = 0; j < 4; ++j) {
    partial[j] += partial[j + 4];
  }
  for (int j = 0; j < 2; ++j) {
    partial[j] += partial[j + 2];
  }
  return partial[0] + partial[1];
}

/// sum a[i] * b[i] in fp32 over independent partial sums.
template <class Element>
NGEMB_HD float dot_widened(const float* a, const Element* b, int n) {
  float partial[reduction_lanes] = {};
  int i = 0;
  for (; i + reduction_lanes <= n; i += reduction_lanes) {
    for (int j = 0; j < reduction_lanes; ++j) {
      partial[j] += a[i + j] * static_cast<float>(b[i + j]);
    }
  }
  float sum = sum_lanes(partial);
  for (; i < n; ++i) {
    sum += a[i] * static_cast<float>(b[i]);
  }
  return sum;
}

/// exp(x) for the x <= 0 of a softmax (a score minus the running maximum), within 2 ulp of expf; 0 below -87
/// (e^-87 < 2^-125, nothing next to the maximum's weight 1) and for -infinity. Cephes' expf: x = n ln2 + r with
/// |r| <= ln2 / 2, a degree-7 polynomial for e^r, and 2^n built in the exponent bits. No branch and no float
/// comparison (under the default -ftrapping-math a compiler keeps those as control flow): the clamp compares the
/// bits, which for x <= 0 grow with |x|, so a loop of it vectorises.
NGEMB_HD inline float softmax_exp(float x) {
  constexpr std::uint32_t lowest_bits = 0xC2AE0000u;  // -87.0f
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const std::uint32_t keep = static_cast<std::uint32_t>(bits <= lowest_bits) * 0xFFFFFFFFu;
  const std::uint32_t clamped_bits = (bits & keep) | (lowest_bits & ~keep);
  float clamped;
  std::memcpy(&clamped, &clamped_bits, sizeof clamped);
  // Round to nearest by adding and removing 1.5 * 2^23, beyond which a float holds no fraction bits.
  constexpr float round_shift = 12582912.0f;
  const float n = (clamped * 1.44269504088896341f + round_shift) - round_shift;
  const float r = (clamped - n * 0.693359375f) + n * 2.12194440e-4f;  // ln 2 in two parts, so n ln 2 is exact
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e_r = p * (r * r) + r + 1.0f;
  const std::int32_t scale_bits = (static_cast<std::int32_t>(n) + 127) * (std::int32_t{1} << 23);
  float two_to_n;
  std::memcpy(&two_to_n, &scale_bits, sizeof two_to_n);
  const float result = e_r * two_to_n;
  std::uint32_t result_bits;
  std::memcpy(&result_bits, &result, sizeof result_bits);
  result_bits &= keep;
  float out;
  std::memcpy(&out, &result_bits, sizeof out);
  return out;
}

}  // namespace ngemb::detail
