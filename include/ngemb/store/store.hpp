#pragma once
// The `store` concept: where the base table E_0 [V x H] and the K*(N-1) hashed sub-tables E_i [m_i x d] live.
// A store hands element operations a trivially copyable ref that maps (sub-table, row id) to the row's first
// element, so one gather operation serves host memory, device memory and memory-mapped checkpoints alike.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/tensor_collection.hpp"

namespace ngemb {

/// Rows [first, first + count) of one sub-table: the part of it a store holds when the tables are split by rows
/// over ranks (a store loaded whole holds {0, m_i}). A store holding a range serves its rows at local ids: global
/// row g of the sub-table is local row g - first.
struct row_range {
  std::int64_t first = 0;
  std::int64_t count = 0;

  friend bool operator==(const row_range&, const row_range&) = default;
};

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

/// The range {0, m_i} of every sub-table of `config`: a whole store. invalid_argument when the config is not valid.
inline std::vector<row_range> full_row_ranges(const ngram_config& config) {
  config.validate();
  std::vector<row_range> ranges;
  for (int table = 0; table < config.num_tables(); ++table) {
    ranges.push_back({0, config.modulus(table)});
  }
  return ranges;
}

/// shape_mismatch unless there is one range per sub-table; invalid_argument naming the sub-table unless each range
/// lies inside [0, m_i].
inline void check_row_ranges(std::span<const row_range> rows, const ngram_config& config, const char* who) {
  if (rows.size() != static_cast<std::size_t>(config.num_tables())) {
    throw shape_mismatch(std::string(who) + ": " + std::to_string(rows.size()) +
                         " row ranges given, the config has K*(N-1) = " + std::to_string(config.num_tables()) +
                         " sub-tables");
  }
  for (int table = 0; table < config.num_tables(); ++table) {
    const row_range range = rows[static_cast<std::size_t>(table)];
    const std::int64_t modulus = config.modulus(table);
    if (range.first < 0 || range.count < 0 || range.first > modulus || range.count > modulus - range.first) {
      throw invalid_argument(std::string(who) + ": sub-table " + std::to_string(table) + ": rows {first " +
                             std::to_string(range.first) + ", count " + std::to_string(range.count) +
                             "} are not inside its " + std::to_string(modulus) + " rows");
    }
  }
}

/// invalid_argument unless every range is its whole sub-table of `moduli` rows: a shard saved under the full tensor
/// names would pass for the whole table.
inline void require_whole_tables(std::span<const row_range> rows, std::span<const std::int64_t> moduli,
                                 const char* who) {
  for (std::size_t table = 0; table < rows.size(); ++table) {
    if (rows[table] != row_range{0, moduli[table]}) {
      throw invalid_argument(std::string(who) + ": cannot save sub-table " + std::to_string(table) +
                             ", of which it holds rows {first " + std::to_string(rows[table].first) + ", count " +
                             std::to_string(rows[table].count) + "} of " + std::to_string(moduli[table]) +
                             ": a shard would be saved under the whole table's name");
    }
  }
}

}  // namespace detail

}  // namespace ngemb
