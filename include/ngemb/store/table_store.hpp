#pragma once
// table_store: the base table and the sub-tables owned in policy memory (host or device), the sub-tables back to
// back in one buffer at exclusive row offsets. Each sub-table is held whole or as one range of its rows (a rank's
// shard). Filled from host arrays or from a checkpoint (any float dtype, converted on load), which is read only
// for the rows held.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/store/store.hpp"

namespace ngemb {

template <storage_type T, class Policy = host_policy>
class table_store {
 public:
  using element_type = T;
  using policy_type = Policy;

  /// Allocates the tables for `config` (with the base table [V x H] or without), contents unspecified: fill them
  /// in place through base() and table(i) (an initialiser, a custom loader).
  table_store(const Policy& policy, const ngram_config& config, bool with_base)
      : table_store(policy, config, detail::full_row_ranges(config), with_base) {}

  /// As above, holding only rows[i] of each sub-table i: table(i) row j is row rows[i].first + j of sub-table i.
  /// shape_mismatch unless there is one range per sub-table; invalid_argument naming the sub-table unless each
  /// lies inside [0, m_i]. The base table, when asked for, is whole.
  table_store(const Policy& policy, const ngram_config& config, std::span<const row_range> rows, bool with_base) {
    config.validate();
    detail::check_table_count(config.num_tables(), "table_store");
    detail::check_row_ranges(rows, config, "table_store");
    vocab_size_ = config.vocab_size;
    hidden_ = config.hidden_size;
    width_ = config.row_width();
    moduli_ = config.moduli();
    ranges_.assign(rows.begin(), rows.end());
    std::int64_t offset = 0;
    for (const row_range& range : ranges_) {
      offsets_.push_back(offset);
      offset += range.count;
    }
    tables_ = typename Policy::template buffer<T>(policy, static_cast<std::size_t>(offset * width_));
    if (with_base) {
      base_ = typename Policy::template buffer<T>(policy, static_cast<std::size_t>(vocab_size_ * hidden_));
    }
  }

  /// Copies host arrays: `base` [V x H] row-major (empty for a store without a base table, as in PLNE layers) and
  /// one [m_i x d] array per sub-table. Throws shape_mismatch naming the array whose size is wrong.
  table_store(const Policy& policy, const ngram_config& config, view<const T> base, std::span<const view<const T>> tables)
      : table_store(policy, config, !base.empty()) {
    if (tables.size() != ranges_.size()) {
      throw shape_mismatch("table_store: " + std::to_string(tables.size()) + " sub-tables given, the config has K*(N-1) = " +
                           std::to_string(ranges_.size()));
    }
    if (!base.empty()) {
      require_elements("base table", base.size(), base_.size());
      copy_to(policy, base, base_.as_view());
    }
    for (int table = 0; table < num_tables(); ++table) {
      const view<const T> source = tables[static_cast<std::size_t>(table)];
      require_elements("sub-table " + std::to_string(table), source.size(), table_elements(table));
      copy_to(policy, source, table_view(table));
    }
    synchronize(policy);  // the host arrays may die when we return
  }

  /// Reads sub-table i from `ngram_names::embedder(ngram_names::module(prefix), i)` and, when the checkpoint has
  /// it, the base table from `ngram_names::base_table(prefix)`, in any float dtype (converted to T). Shapes must be
  /// [m_i, d] and [V, H]; a missing tensor or a wrong shape or dtype raises format_error naming the file and tensor.
  static table_store load(const Policy& policy, const checkpoint& source, const std::string& prefix,
                          const ngram_config& config) {
    return load_rows(policy, source, prefix, config, detail::full_row_ranges(config));
  }

  /// The store concept's form: the tables are copied, so the checkpoint is not kept.
  static table_store load(const Policy& policy, const std::shared_ptr<const checkpoint>& source,
                          const std::string& prefix, const ngram_config& config) {
    return load(policy, *source, prefix, config);
  }

  /// As load, holding and reading only rows[i] of each sub-table i (checked as the range constructor checks them,
  /// before anything is read) through checkpoint::bytes(name, begin, end): a checkpoint mapped on demand maps only
  /// those rows' pages. The base table, when the checkpoint has it, is read whole.
  static table_store load_rows(const Policy& policy, const checkpoint& source, const std::string& prefix,
                               const ngram_config& config, std::span<const row_range> rows) {
    config.validate();
    detail::check_table_count(config.num_tables(), "table_store");
    detail::check_row_ranges(rows, config, "table_store");
    const std::string base = ngram_names::base_table(prefix);
    const std::string module = ngram_names::module(prefix);
    const std::vector<std::int64_t> base_shape{config.vocab_size, config.hidden_size};
    const auto table_shape = [&](int table) {
      return std::vector<std::int64_t>{config.modulus(table), config.row_width()};
    };
    const bool with_base = source.contains(base);
    if (with_base) {
      check_float_tensor(source, base, base_shape);
    }
    for (int table = 0; table < config.num_tables(); ++table) {
      check_float_tensor(source, ngram_names::embedder(module, table), table_shape(table));
    }
    table_store store(policy, config, rows, with_base);
    std::vector<T> staging;
    const auto read = [&](const std::string& name, const std::vector<std::int64_t>& shape, row_range range,
                          view<T> destination) {
      staging.resize(destination.size());
      read_tensor_rows_into<T>(source, name, shape, range.first, range.count, std::span<T>(staging));
      copy_to(policy, view<const T>(staging), destination);
      synchronize(policy);  // the staging vector is reused
    };
    if (store.has_base()) {
      read(base, base_shape, {0, config.vocab_size}, store.base_.as_view());
    }
    for (int table = 0; table < store.num_tables(); ++table) {
      read(ngram_names::embedder(module, table), table_shape(table), store.range(table), store.table_view(table));
    }
    return store;
  }

  /// The form the sharded store calls.
  static table_store load_rows(const Policy& policy, const std::shared_ptr<const checkpoint>& source,
                               const std::string& prefix, const ngram_config& config,
                               std::span<const row_range> rows) {
    return load_rows(policy, *source, prefix, config, rows);
  }

  /// Writes the tables under the names load() reads, in T. invalid_argument naming the sub-table when the store
  /// holds part of one: a shard saved under the whole table's name would pass for it.
  void save(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    detail::require_whole_tables(ranges_, moduli_, "table_store");
    if (has_base()) {
      out.add<T>(policy, ngram_names::base_table(prefix), {vocab_size_, hidden_}, base_.as_view());
    }
    const std::string module = ngram_names::module(prefix);
    for (int table = 0; table < num_tables(); ++table) {
      out.add<T>(policy, ngram_names::embedder(module, table), {rows(table), width_},
                 tables_.as_view().subview(static_cast<std::size_t>(offsets_[static_cast<std::size_t>(table)] * width_),
                                           table_elements(table)));
    }
  }

  [[nodiscard]] int num_tables() const { return static_cast<int>(ranges_.size()); }
  /// Rows held of sub-table `table`: m_i when whole, else its range's count.
  [[nodiscard]] std::int64_t rows(int table) const { return range(table).count; }
  /// The rows held of sub-table `table`: {0, m_i} when whole.
  [[nodiscard]] row_range range(int table) const { return ranges_[static_cast<std::size_t>(table)]; }
  [[nodiscard]] std::int64_t row_width() const { return width_; }
  [[nodiscard]] bool has_base() const { return base_.size() != 0; }
  [[nodiscard]] std::int64_t vocab_size() const { return vocab_size_; }
  [[nodiscard]] std::int64_t hidden_size() const { return hidden_; }
  /// Bytes of table memory (base and sub-tables).
  [[nodiscard]] std::size_t bytes() const { return (base_.size() + tables_.size()) * sizeof(T); }

  /// The base table [V x H] and the rows held of sub-table i [rows(i) x d], row-major in policy memory.
  [[nodiscard]] view<T> base() { return base_.as_view(); }
  [[nodiscard]] view<T> table(int index) { return table_view(index); }

  [[nodiscard]] table_rows_ref<T> ref() const {
    table_rows_ref<T> rows;
    for (int table = 0; table < num_tables(); ++table) {
      rows.tables[table] = tables_.data() + offsets_[static_cast<std::size_t>(table)] * width_;
    }
    rows.base = has_base() ? base_.data() : nullptr;
    rows.width = width_;
    rows.hidden = hidden_;
    return rows;
  }

 private:
  [[nodiscard]] std::size_t table_elements(int table) const {
    return static_cast<std::size_t>(rows(table) * width_);
  }
  view<T> table_view(int table) {
    return tables_.as_view().subview(static_cast<std::size_t>(offsets_[static_cast<std::size_t>(table)] * width_),
                                     table_elements(table));
  }
  static void require_elements(const std::string& what, std::size_t got, std::size_t expected) {
    if (got != expected) {
      throw shape_mismatch("table_store: " + what + " has " + std::to_string(got) + " elements, expected " +
                           std::to_string(expected));
    }
  }

  std::int64_t vocab_size_ = 0;
  std::int64_t hidden_ = 0;
  std::int64_t width_ = 0;
  std::vector<std::int64_t> moduli_;   // m_i, the rows of each whole sub-table
  std::vector<row_range> ranges_;      // the rows held of each sub-table
  std::vector<std::int64_t> offsets_;  // where each sub-table's rows start in tables_, in rows
  typename Policy::template buffer<T> base_;
  typename Policy::template buffer<T> tables_;
};

static_assert(detail::check_store<table_store<float>>());

}  // namespace ngemb
