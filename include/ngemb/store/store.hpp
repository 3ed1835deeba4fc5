#pragma once
// The `store` concept: where the base table E_0 [V x H] and the K*(N-1) hashed sub-tables E_i [m_i x d] live.
// A store hands element operations a trivially copyable ref that maps (sub-table, row id) to the row's first
// element, so one gather operation serves host memory, device memory and memory-mapped checkpoints alike.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"

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

template <class S>
concept store = requires(const S& s, int table) {
  typename S::element_type;
  typename S::policy_type;
  requires storage_type<typename S::element_type>;
  { s.num_tables() } -> std::convertible_to<int>;
  { s.rows(table) } -> std::convertible_to<std::int64_t>;
  { s.row_width() } -> std::convertible_to<std::int64_t>;
  { s.has_base() } -> std::convertible_to<bool>;
  { s.vocab_size() } -> std::convertible_to<std::int64_t>;
  { s.hidden_size() } -> std::convertible_to<std::int64_t>;
  { s.ref().row(table, std::uint64_t{0}) } -> std::same_as<const typename S::element_type*>;
  { s.ref().base_row(std::uint64_t{0}) } -> std::same_as<const typename S::element_type*>;
};

namespace detail {

/// Sub-table limits every store shares (the ref has room for 64 tables, like longcat_hash).
inline void check_table_count(int tables, const char* who) {
  if (tables < 1 || tables > table_rows_ref<float>::max_tables) {
    throw invalid_argument(std::string(who) + ": K*(N-1) = " + std::to_string(tables) + " sub-tables, supported 1.." +
                           std::to_string(table_rows_ref<float>::max_tables));
  }
}

}  // namespace detail

}  // namespace ngemb
