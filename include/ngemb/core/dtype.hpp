#pragma once
// Storage types for table rows and weights: fp32, bf16, fp16 and fp8 (E4M3), with exact round-to-nearest-even
// conversions written once for host and device (the bit manipulations below are what the hardware does; writing
// them out keeps host and device results identical bit for bit).
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "ngemb/core/macros.hpp"

namespace ngemb {

namespace detail {

NGEMB_HD inline std::uint32_t float_bits(float value) {
#if NGEMB_IN_DEVICE_CODE
  return __float_as_uint(value);
#else
  return std::bit_cast<std::uint32_t>(value);
#endif
}

NGEMB_HD inline float float_from_bits(std::uint32_t bits) {
#if NGEMB_IN_DEVICE_CODE
  return __uint_as_float(bits);
#else
  return std::bit_cast<float>(bits);
#endif
}

NGEMB_HD inline std::uint16_t float_to_bf16_bits(float value) {
  const std::uint32_t bits = float_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep sign and top payload, force quiet
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  }
  const std::uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);  // ties to even; overflow becomes inf
  return static_cast<std::uint16_t>((bits + rounding_bias) >> 16);
}

NGEMB_HD inline float bf16_bits_to_float(std::uint16_t bits) {
  return float_from_bits(static_cast<std::uint32_t>(bits) << 16);
}

NGEMB_HD inline std::uint16_t float_to_fp16_bits(float value) {
  const std::uint32_t bits = float_bits(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) {  // NaN: quiet, keep the top payload bits
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  }
  if (magnitude >= 0x477ff000u) {  // >= 65520 rounds (ties to even) past 65504: infinity
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  if (magnitude >= 0x38800000u) {  // normal fp16: rebias the exponent (127 -> 15), round the 13 dropped bits
    std::uint32_t rebiased = magnitude - 0x38000000u;
    rebiased += 0x0fffu + ((rebiased >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | (rebiased >> 13));
  }
  if (magnitude <= 0x33000000u) {  // <= 2^-25, half of the smallest subnormal: ties to even give zero
    return sign;
  }
  // Subnormal fp16: value / 2^-24 = mantissa * 2^(exponent - 126), rounded to nearest even.
  const std::uint32_t exponent = magnitude >> 23;
  const std::uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126u - exponent;  // 14..24 here
  std::uint32_t result = mantissa >> shift;
  const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
  const std::uint32_t halfway = 1u << (shift - 1u);
  if (remainder > halfway || (remainder == halfway && (result & 1u))) {
    ++result;  // a carry into bit 10 correctly yields the smallest normal
  }
  return static_cast<std::uint16_t>(sign | result);
}

NGEMB_HD inline float fp16_bits_to_float(std::uint16_t half) {
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  std::uint32_t exponent = (half >> 10) & 0x1fu;
  std::uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0x1fu) {
    return float_from_bits(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent == 0) {
    if (mantissa == 0) {
      return float_from_bits(sign);
    }
    exponent = 1;  // normalise the subnormal: shift until the implicit bit appears
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    mantissa &= 0x3ffu;
  }
  return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

/// float -> E4M3FN bits, round to nearest even, saturating to +-448 (as the FP8 checkpoints' quantizers clamp before
/// they cast, and as CUDA's __NV_SATFINITE does; torch's unclamped cast gives NaN from 464 up). NaN stays NaN.
NGEMB_HD inline std::uint8_t float_to_fp8_e4m3_bits(float value) {
  const std::uint32_t bits = float_bits(value);
  const auto sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) {  // NaN: E4M3FN has one NaN per sign, all other bits set
    return static_cast<std::uint8_t>(sign | 0x7fu);
  }
  if (magnitude >= 0x43e00000u) {  // >= 448 (infinity too): the largest finite value
    return static_cast<std::uint8_t>(sign | 0x7eu);
  }
  if (magnitude >= 0x3c800000u) {  // >= 2^-6, normal E4M3: rebias the exponent (127 -> 7), round the 20 dropped bits
    std::uint32_t rebiased = magnitude - 0x3c000000u;
    rebiased += 0x7ffffu + ((rebiased >> 20) & 1u);  // below 448 the carry reaches at most 0x7e
    return static_cast<std::uint8_t>(sign | (rebiased >> 20));
  }
  if (magnitude <= 0x3a800000u) {  // <= 2^-10, half of the smallest subnormal: ties to even give zero
    return sign;
  }
  // Subnormal E4M3: value / 2^-9 = mantissa * 2^(exponent - 141), rounded to nearest even.
  const std::uint32_t exponent = magnitude >> 23;
  const std::uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 141u - exponent;  // 21..24 here
  std::uint32_t result = mantissa >> shift;
  const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
  const std::uint32_t halfway = 1u << (shift - 1u);
  if (remainder > halfway || (remainder == halfway && (result & 1u))) {
    ++result;  // a carry into bit 3 correctly yields the smallest normal
  }
  return static_cast<std::uint8_t>(sign | result);
}

/// E4M3FN bits -> float, exact: bias 7, subnormals below 2^-6, no infinities, 0x7f/0xff NaN.
NGEMB_HD inline float fp8_e4m3_bits_to_float(std::uint8_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x80u) << 24;
  const std::uint32_t magnitude = bits & 0x7fu;
  if (magnitude == 0x7fu) {
    return float_from_bits(sign | 0x7fc00000u);
  }
  if (magnitude < 8u) {  // subnormal (or zero): mantissa * 2^-9, exact in float
    return float_from_bits(sign | float_bits(static_cast<float>(magnitude) * 0x1p-9f));
  }
  return float_from_bits(sign | ((magnitude << 20) + 0x3c000000u));  // rebias the exponent 7 -> 127
}

}  // namespace detail

/// bfloat16 storage: 1 sign, 8 exponent, 7 mantissa bits. Converts from float with round-to-nearest-even.
struct bf16 {
  std::uint16_t bits = 0;

  bf16() = default;
  NGEMB_HD explicit bf16(float value) : bits(detail::float_to_bf16_bits(value)) {}
  NGEMB_HD static bf16 from_bits(std::uint16_t raw) {
    bf16 result;
    result.bits = raw;
    return result;
  }
  NGEMB_HD explicit operator float() const { return detail::bf16_bits_to_float(bits); }
  friend NGEMB_HD bool operator==(bf16 lhs, bf16 rhs) { return lhs.bits == rhs.bits; }
};

/// IEEE binary16 storage: 1 sign, 5 exponent, 10 mantissa bits, with subnormals, inf and NaN.
struct fp16 {
  std::uint16_t bits = 0;

  fp16() = default;
  NGEMB_HD explicit fp16(float value) : bits(detail::float_to_fp16_bits(value)) {}
  NGEMB_HD static fp16 from_bits(std::uint16_t raw) {
    fp16 result;
    result.bits = raw;
    return result;
  }
  NGEMB_HD explicit operator float() const { return detail::fp16_bits_to_float(bits); }
  friend NGEMB_HD bool operator==(fp16 lhs, fp16 rhs) { return lhs.bits == rhs.bits; }
};

/// FP8 E4M3FN storage (torch.float8_e4m3fn, safetensors F8_E4M3): 1 sign, 4 exponent (bias 7), 3 mantissa bits,
/// subnormals, no infinities, NaN only as 0x7f/0xff, largest finite 448. Widening is exact; narrowing rounds to
/// nearest even and saturates to +-448. Weights in this type carry a block scale (policy/fp8_gemm.hpp).
struct fp8_e4m3 {
  std::uint8_t bits = 0;

  fp8_e4m3() = default;
  NGEMB_HD explicit fp8_e4m3(float value) : bits(detail::float_to_fp8_e4m3_bits(value)) {}
  NGEMB_HD static fp8_e4m3 from_bits(std::uint8_t raw) {
    fp8_e4m3 result;
    result.bits = raw;
    return result;
  }
  NGEMB_HD explicit operator float() const { return detail::fp8_e4m3_bits_to_float(bits); }
  friend NGEMB_HD bool operator==(fp8_e4m3 lhs, fp8_e4m3 rhs) { return lhs.bits == rhs.bits; }
};

static_assert(sizeof(bf16) == 2 && std::is_trivially_copyable_v<bf16>);
static_assert(sizeof(fp16) == 2 && std::is_trivially_copyable_v<fp16>);
static_assert(sizeof(fp8_e4m3) == 1 && std::is_trivially_copyable_v<fp8_e4m3>);

/// The element types a table row or a weight may hold.
template <class T>
concept storage_type = std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, fp16> ||
                       std::is_same_v<T, fp8_e4m3>;

/// Runtime tag of a storage type, with the safetensors spelling.
enum class dtype : std::uint8_t { f32, bf16, f16, f8_e4m3 };

template <storage_type T>
inline constexpr dtype dtype_of = std::is_same_v<T, float>  ? dtype::f32
                                  : std::is_same_v<T, bf16> ? dtype::bf16
                                  : std::is_same_v<T, fp16> ? dtype::f16
                                                            : dtype::f8_e4m3;

constexpr std::size_t size_of(dtype type) {
  switch (type) {
    case dtype::f32: return 4;
    case dtype::bf16: return 2;
    case dtype::f16: return 2;
    case dtype::f8_e4m3: return 1;
  }
  return 0;
}

constexpr std::string_view name_of(dtype type) {
  switch (type) {
    case dtype::f32: return "F32";
    case dtype::bf16: return "BF16";
    case dtype::f16: return "F16";
    case dtype::f8_e4m3: return "F8_E4M3";
  }
  return "?";
}

/// Widen any storage type to float (exact for all four).
template <storage_type T>
NGEMB_HD inline float to_float(T value) {
  return static_cast<float>(value);
}

/// Narrow a float to a storage type with round-to-nearest-even.
template <storage_type T>
NGEMB_HD inline T from_float(float value) {
  return T(value);
}

namespace detail {

/// Any of float, double, bf16, fp16 and fp8_e4m3 to any other: the narrow types widen exactly through float, float
/// and double convert as C++ does, and narrow results round to nearest even from float (fp8 saturating).
template <class To, class From>
NGEMB_HD To convert(From value) {
  if constexpr (std::is_same_v<To, From>) {
    return value;
  } else if constexpr (std::is_same_v<From, bf16> || std::is_same_v<From, fp16> || std::is_same_v<From, fp8_e4m3>) {
    return convert<To>(to_float(value));
  } else if constexpr (std::is_same_v<To, float> || std::is_same_v<To, double>) {
    return static_cast<To>(value);
  } else {
    return from_float<To>(static_cast<float>(value));
  }
}

}  // namespace detail

}  // namespace ngemb
