#pragma once
// Facts of the safetensors format that the reader and the writer share: the dtype table, the little-endian
// header length, checked size arithmetic.
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "ngemb/io/checkpoint.hpp"

namespace ngemb::detail {

/// The reference implementation refuses headers above this size; so do we, before allocating for one.
inline constexpr std::uint64_t max_safetensors_header_bytes = 100'000'000;

/// Bits per element of every dtype the safetensors format defines (some are narrower than a byte).
inline std::optional<std::size_t> safetensors_dtype_bits(std::string_view dtype) {
  static constexpr std::array<std::pair<std::string_view, std::size_t>, 20> table{{
      {"BOOL", 8},  {"U8", 8},       {"I8", 8},       {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F4", 4},
      {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"I16", 16},     {"U16", 16},    {"F16", 16},    {"BF16", 16},  {"I32", 32},
      {"U32", 32},  {"F32", 32},     {"I64", 64},     {"U64", 64},    {"F64", 64},    {"C64", 64},
  }};
  for (const auto& [name, bits] : table) {
    if (name == dtype) {
      return bits;
    }
  }
  return std::nullopt;
}

/// The product of the dimensions; nullopt for a negative dimension or a product above INT64_MAX.
inline std::optional<std::int64_t> checked_element_count(std::span<const std::int64_t> shape) {
  std::int64_t count = 1;
  for (const std::int64_t dimension : shape) {
    if (dimension < 0 || (dimension != 0 && count > std::numeric_limits<std::int64_t>::max() / dimension)) {
      return std::nullopt;
    }
    count *= dimension;
  }
  return count;
}

/// Bytes taken by `elements` elements of `bits` bits; nullopt when that overflows or is not a whole byte count.
inline std::optional<std::size_t> checked_byte_count(std::int64_t elements, std::size_t bits) {
  if (!std::in_range<std::size_t>(elements)) {
    return std::nullopt;
  }
  const auto count = static_cast<std::size_t>(elements);
  if (count > std::numeric_limits<std::size_t>::max() / bits || (count * bits) % 8 != 0) {
    return std::nullopt;
  }
  return count * bits / 8;
}

inline std::uint64_t load_u64_le(const std::byte* bytes) {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) {
    value = (value << 8) | static_cast<std::uint64_t>(bytes[i]);
  }
  return value;
}

inline std::array<char, 8> store_u64_le(std::uint64_t value) {
  std::array<char, 8> bytes{};
  for (char& byte : bytes) {
    byte = static_cast<char>(value & 0xffu);
    value >>= 8;
  }
  return bytes;
}

}  // namespace ngemb::detail
