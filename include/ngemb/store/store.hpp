#pragma once
// The `store` concept: where the base table E_0 [V x H] and the K*(N-1) hashed sub-tables E_i [m_i x d] live.
// A store hands element operations a trivially copyable ref that maps (sub-table, row id) to the row's first
// element, so one gather operation serves host memory, device memory and memory-mapped checkpoints alike.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/tensor_collection.hpp"

namespace ngemb {

/// Row addresses of every sub-table (and of the base table, when the store has one).
template <storage_type T>
struct table_rows_ref {
  static constexpr int max_tables = 64;
  const T* tables[max_tables] = {};
  const T* base = nullptr;
  std::int64_t width = 0;   ///< d, elements per sub-table row
  std::int64_t hidden = 0;  ///< H, elements per base row

  NGEMB_HD const T* row(int table, std::uint64_t id) const { return tables[table] + id * static_cast<std::uint64_t>(width); }
  NGEMB_HD const T* base_row(std::uint64_t token) const { return base + token * static_cast<std::uint64_t>(hidden); }
};

namespace detail {

// One concept per member, so a type that is not a store fails on a static_assert naming what it lacks.
template <class S>
concept store_element = requires { typename S::element_type; } && storage_type<typename S::element_type>;
template <class S>
concept store_policy = requires { typename S::policy_type; };
template <class S>
concept store_sizes = requires(const S& s, int table) {
  { s.num_tables() } -> std::convertible_to<int>;
  { s.rows(table) } -> std::convertible_to<std::int64_t>;
  { s.row_width() } -> std::convertible_to<std::int64_t>;
  { s.has_base() } -> std::convertible_to<bool>;
  { s.vocab_size() } -> std::convertible_to<std::int64_t>;
  { s.hidden_size() } -> std::convertible_to<std::int64_t>;
};
template <class S>
concept store_rows = requires(const S& s, int table) {
  { s.ref().row(table, std::uint64_t{0}) } -> std::same_as<const typename S::element_type*>;
  { s.ref().base_row(std::uint64_t{0}) } -> std::same_as<const typename S::element_type*>;
};
template <class S>
concept store_load = requires(const typename S::policy_type& policy, std::shared_ptr<const checkpoint> source,
                              const std::string& prefix, const ngram_config& config) {
  { S::load(policy, source, prefix, config) } -> std::same_as<S>;
};
template <class S>
concept store_save = requires(const S& s, const typename S::policy_type& policy, const std::string& prefix,
                              tensor_collection& out) { s.save(policy, prefix, out); };

}  // namespace detail

/// A store: its element type and policy, its sizes, a ref for the element operations, and its whole life in a
/// checkpoint. load(policy, source, prefix, config) reads `ngram_names::embedder(module(prefix), i)` and, when the
/// checkpoint has it, `ngram_names::base_table(prefix)`; a store may keep `source` alive to read it in place.
/// save(policy, prefix, out) writes the same names.
template <class S>
concept store = detail::store_element<S> && detail::store_policy<S> && detail::store_sizes<S> &&
                detail::store_rows<S> && detail::store_load<S> && detail::store_save<S>;

namespace detail {

/// Each missing member of a store named by its own failure.
template <class S>
constexpr bool check_store() {
  static_assert(store_element<S>, "store: must have element_type, a storage type (float, bf16, fp16, fp8)");
  static_assert(store_policy<S>, "store: must have policy_type");
  static_assert(store_sizes<S>,
                "store: must have num_tables(), rows(table), row_width(), has_base(), vocab_size(), hidden_size()");
  static_assert(store_rows<S>, "store: must have ref() with row(table, id) and base_row(token) returning element "
                               "pointers");
  static_assert(store_load<S>, "store: must have static load(policy, std::shared_ptr<const checkpoint>, prefix, "
                               "ngram_config) returning the store");
  static_assert(store_save<S>, "store: must have save(policy, prefix, tensor_collection&)");
  return true;
}

/// Sub-table limits every store shares (the ref has room for 64 tables, like longcat_hash).
inline void check_table_count(int tables, const char* who) {
  if (tables < 1 || tables > table_rows_ref<float>::max_tables) {
    throw invalid_argument(std::string(who) + ": K*(N-1) = " + std::to_string(tables) + " sub-tables, supported 1.." +
                           std::to_string(table_rows_ref<float>::max_tables));
  }
}

}  // namespace detail

}  // namespace ngemb
