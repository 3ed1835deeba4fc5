#pragma once
// The concept every n-gram hasher satisfies. A hasher is a host object built from the config; its `ref()` is a
// small trivially copyable value with NGEMB_HD member functions that element operations copy into kernels.
#include <concepts>
#include <cstdint>
#include <type_traits>

#include "ngemb/core/config.hpp"

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

namespace detail {

// One concept per member, so a type that is not a hasher fails on a static_assert naming what it lacks.
template <class H>
concept hasher_from_config = std::constructible_from<H, const ngram_config&>;
template <class H>
concept hasher_with_ref = requires(const H& hasher) {
  typename H::ref_type;
  { hasher.ref() } -> std::convertible_to<typename H::ref_type>;
} && hasher_ref<typename H::ref_type>;
template <class H>
concept hasher_sizes = requires(const H& hasher, int table) {
  { hasher.num_tables() } -> std::convertible_to<int>;
  { hasher.lookback() } -> std::convertible_to<int>;
  { hasher.vocab_size() } -> std::convertible_to<std::int64_t>;
  { hasher.rows(table) } -> std::convertible_to<std::int64_t>;
  { hasher.total_rows() } -> std::convertible_to<std::int64_t>;
};

}  // namespace detail

/// A hasher: built from the config (it has no weights to load), sizes for the host and a ref for the element
/// operations.
template <class Hasher>
concept hasher = detail::hasher_from_config<Hasher> && detail::hasher_with_ref<Hasher> && detail::hasher_sizes<Hasher>;

namespace detail {

/// Each missing member of a hasher named by its own failure.
template <class H>
constexpr bool check_hasher() {
  static_assert(hasher_from_config<H>, "hasher: must be constructible from const ngram_config&");
  static_assert(hasher_with_ref<H>, "hasher: must have ref_type (a trivially copyable hasher_ref: max_lookback, "
                                    "num_tables(), lookback(), cuts_lookback(token), hash(token, history, ids, "
                                    "concatenated)) and ref()");
  static_assert(hasher_sizes<H>, "hasher: must have num_tables(), lookback(), vocab_size(), rows(table), total_rows()");
  return true;
}

}  // namespace detail

}  // namespace ngemb
