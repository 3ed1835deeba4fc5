#pragma once
// table_store: the base table and all sub-tables owned in policy memory (host or device), the sub-tables back
// to back in one buffer at exclusive row offsets. Filled from host arrays or from a checkpoint (any float dtype,
// converted on load).
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
      : vocab_size_(config.vocab_size), hidden_(config.hidden_size), width_(config.row_width()) {
    config.validate();
    detail::check_table_count(config.num_tables(), "table_store");
    std::int64_t offset = 0;
    for (int table = 0; table < config.num_tables(); ++table) {
      rows_.push_back(config.modulus(table));
      offsets_.push_back(offset);
      offset += config.modulus(table);
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
    if (tables.size() != rows_.size()) {
      throw shape_mismatch("table_store: " + std::to_string(tables.size()) + " sub-tables given, the config has K*(N-1) = " +
                           std::to_string(rows_.size()));
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
    config.validate();
    const std::string base = ngram_names::base_table(prefix);
    const std::string module = ngram_names::module(prefix);
    const bool with_base = source.contains(base);
    if (with_base) {
      check_float_tensor(source, base, std::vector<std::int64_t>{config.vocab_size, config.hidden_size});
    }
    for (int table = 0; table < config.num_tables(); ++table) {
      check_float_tensor(source, ngram_names::embedder(module, table),
                         std::vector<std::int64_t>{config.modulus(table), config.row_width()});
    }
    table_store store(policy, config, with_base);
    std::vector<T> staging;
    const auto read = [&](const std::string& name, std::vector<std::int64_t> shape, view<T> destination) {
      staging.resize(destination.size());
      read_tensor_into<T>(source, name, shape, std::span<T>(staging));
      copy_to(policy, view<const T>(staging), destination);
      synchronize(policy);  // the staging vector is reused
    };
    if (store.has_base()) {
      read(base, {store.vocab_size_, store.hidden_}, store.base_.as_view());
    }
    for (int table = 0; table < store.num_tables(); ++table) {
      read(ngram_names::embedder(module, table), {store.rows(table), store.width_}, store.table_view(table));
    }
    return store;
  }

  /// The store concept's form: the tables are copied, so the checkpoint is not kept.
  static table_store load(const Policy& policy, const std::shared_ptr<const checkpoint>& source,
                          const std::string& prefix, const ngram_config& config) {
    return load(policy, *source, prefix, config);
  }

  /// Writes the tables under the names load() reads, in T.
  void save(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
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

  [[nodiscard]] int num_tables() const { return static_cast<int>(rows_.size()); }
  [[nodiscard]] std::int64_t rows(int table) const { return rows_[static_cast<std::size_t>(table)]; }
  [[nodiscard]] std::int64_t row_width() const { return width_; }
  [[nodiscard]] bool has_base() const { return base_.size() != 0; }
  [[nodiscard]] std::int64_t vocab_size() const { return vocab_size_; }
  [[nodiscard]] std::int64_t hidden_size() const { return hidden_; }
  /// Bytes of table memory (base and sub-tables).
  [[nodiscard]] std::size_t bytes() const { return (base_.size() + tables_.size()) * sizeof(T); }

  /// The base table [V x H] and sub-table i [m_i x d], row-major in policy memory.
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

  std::int64_t vocab_size_;
  std::int64_t hidden_;
  std::int64_t width_;
  std::vector<std::int64_t> rows_;
  std::vector<std::int64_t> offsets_;
  typename Policy::template buffer<T> base_;
  typename Policy::template buffer<T> tables_;
};

static_assert(detail::check_store<table_store<float>>());

}  // namespace ngemb
