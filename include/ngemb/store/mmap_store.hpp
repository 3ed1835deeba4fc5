#pragma once
// mmap_store: the tables read in place from a checkpoint whose tensors are memory-mapped (safetensors files).
// Opening costs no load time and only the pages a gather touches are ever read, so a 60 GB table set runs in the
// memory its traffic needs. Host memory only; the stored dtype must be T (no conversion, no copy). Each sub-table is
// read whole or as one range of its rows (a rank's shard): over a checkpoint mapped on demand, only those rows'
// pages are ever mapped.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/store/store.hpp"

namespace ngemb {

template <storage_type T>
class mmap_store {
 public:
  using element_type = T;
  using policy_type = host_policy;

  /// Maps sub-table i at `ngram_names::embedder(ngram_names::module(prefix), i)` and, when the checkpoint has it,
  /// the base table at `ngram_names::base_table(prefix)` (SPEC §4). Shapes must be [m_i, d] and [V, H] and the
  /// dtype T; otherwise format_error names the file and tensor. The store shares ownership of the checkpoint, whose
  /// memory it reads in place.
  mmap_store(std::shared_ptr<const ngemb::checkpoint> source, const std::string& prefix, const ngram_config& config)
      : mmap_store(std::move(source), prefix, config, detail::full_row_ranges(config)) {}

  /// The uniform loader every store has (the policy only selects host memory here).
  static mmap_store load(const host_policy& /*policy*/, std::shared_ptr<const ngemb::checkpoint> source,
                         const std::string& prefix, const ngram_config& config) {
    return mmap_store(std::move(source), prefix, config);
  }

  /// As the constructor, reading only rows[i] of each sub-table i (checkpoint::tensor_rows): ref().row(i, j) is row
  /// rows[i].first + j of sub-table i. shape_mismatch unless there is one range per sub-table; invalid_argument
  /// naming the sub-table unless each lies inside [0, m_i]. The base table, when the checkpoint has it, is whole.
  static mmap_store load_rows(std::shared_ptr<const ngemb::checkpoint> source, const std::string& prefix,
                              const ngram_config& config, std::span<const row_range> rows) {
    return mmap_store(std::move(source), prefix, config, rows);
  }

  /// The form every store has, as load (the policy only selects host memory here).
  static mmap_store load_rows(const host_policy& /*policy*/, std::shared_ptr<const ngemb::checkpoint> source,
                              const std::string& prefix, const ngram_config& config, std::span<const row_range> rows) {
    return mmap_store(std::move(source), prefix, config, rows);
  }

  /// Writes the mapped tables under the names load() reads (the rows are copied, so a checkpoint can be re-saved
  /// elsewhere). invalid_argument naming the sub-table when the store holds part of one.
  void save(const host_policy& policy, const std::string& prefix, tensor_collection& out) const {
    detail::require_whole_tables(ranges_, moduli_, "mmap_store");
    if (has_base()) {
      out.add<T>(policy, ngram_names::base_table(prefix), {vocab_size_, hidden_},
                 view<const T>(rows_.base, static_cast<std::size_t>(vocab_size_ * hidden_)));
    }
    const std::string module = ngram_names::module(prefix);
    for (int table = 0; table < num_tables(); ++table) {
      out.add<T>(policy, ngram_names::embedder(module, table), {rows(table), rows_.width},
                 view<const T>(rows_.tables[table], static_cast<std::size_t>(rows(table) * rows_.width)));
    }
  }

  [[nodiscard]] int num_tables() const { return static_cast<int>(ranges_.size()); }
  /// Rows held of sub-table `table`: m_i when whole, else its range's count.
  [[nodiscard]] std::int64_t rows(int table) const { return range(table).count; }
  /// The rows held of sub-table `table`: {0, m_i} when whole.
  [[nodiscard]] row_range range(int table) const { return ranges_[static_cast<std::size_t>(table)]; }
  [[nodiscard]] std::int64_t row_width() const { return rows_.width; }
  [[nodiscard]] bool has_base() const { return rows_.base != nullptr; }
  [[nodiscard]] std::int64_t vocab_size() const { return vocab_size_; }
  [[nodiscard]] std::int64_t hidden_size() const { return hidden_; }
  [[nodiscard]] table_rows_ref<T> ref() const { return rows_; }
  [[nodiscard]] const ngemb::checkpoint& checkpoint() const { return *checkpoint_; }

 private:
  mmap_store(std::shared_ptr<const ngemb::checkpoint> source, const std::string& prefix, const ngram_config& config,
             std::span<const row_range> rows)
      : checkpoint_(std::move(source)), vocab_size_(config.vocab_size), hidden_(config.hidden_size) {
    config.validate();
    detail::check_table_count(config.num_tables(), "mmap_store");
    detail::check_row_ranges(rows, config, "mmap_store");
    moduli_ = config.moduli();
    ranges_.assign(rows.begin(), rows.end());
    rows_.width = config.row_width();
    rows_.hidden = hidden_;
    const std::string base = ngram_names::base_table(prefix);
    if (checkpoint_->contains(base)) {
      const std::int64_t shape[] = {vocab_size_, hidden_};
      rows_.base = checkpoint_->tensor<T>(base, shape).data();
    }
    const std::string module = ngram_names::module(prefix);
    for (int table = 0; table < config.num_tables(); ++table) {
      const std::int64_t shape[] = {config.modulus(table), rows_.width};
      const row_range range = ranges_[static_cast<std::size_t>(table)];
      rows_.tables[table] =
          checkpoint_->tensor_rows<T>(ngram_names::embedder(module, table), shape, range.first, range.count).data();
    }
  }

  std::shared_ptr<const ngemb::checkpoint> checkpoint_;
  std::int64_t vocab_size_;
  std::int64_t hidden_;
  std::vector<std::int64_t> moduli_;  // m_i, the rows of each whole sub-table
  std::vector<row_range> ranges_;     // the rows held of each sub-table
  table_rows_ref<T> rows_;
};

static_assert(detail::check_store<mmap_store<float>>());

}  // namespace ngemb
