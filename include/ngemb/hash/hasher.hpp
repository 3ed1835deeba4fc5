#pragma once
// The concept every n-gram hasher satisfies. A hasher is a host object built from the config; its `ref()` is a
// small trivially copyable value with NGEMB_HD member functions that element operations copy into kernels.
#include <concepts>
#include <cstdint>
#include <type_traits>

namespace ngemb {

/// The device-copyable part of a hasher: given the current token and its look-back (already cut at segment
/// boundaries, zero-padded), it writes the ids of every sub-table.
template <class Ref>
concept hasher_ref =
    std::is_trivially_copyable_v<Ref> &&
    requires(const Ref& ref, std::uint32_t token, const std::uint32_t* history, std::uint32_t* ids32,
             std::int64_t* ids64, bool concatenated) {
      { Ref::max_lookback } -> std::convertible_to<int>;
      { ref.num_tables() } -> std::convertible_to<int>;
      { ref.lookback() } -> std::convertible_to<int>;
      { ref.cuts_lookback(token) } -> std::same_as<bool>;
      ref.hash(token, history, ids32, concatenated);
      ref.hash(token, history, ids64, concatenated);
    };

/// A hasher: sizes for the host and a ref for the element operations.
template <class Hasher>
concept hasher = requires(const Hasher& hasher, int table) {
  typename Hasher::ref_type;
  { hasher.ref() } -> std::convertible_to<typename Hasher::ref_type>;
  { hasher.num_tables() } -> std::convertible_to<int>;
  { hasher.lookback() } -> std::convertible_to<int>;
  { hasher.vocab_size() } -> std::convertible_to<std::int64_t>;
  { hasher.rows(table) } -> std::convertible_to<std::int64_t>;
  { hasher.total_rows() } -> std::convertible_to<std::int64_t>;
} && hasher_ref<typename Hasher::ref_type>;

}  // namespace ngemb
