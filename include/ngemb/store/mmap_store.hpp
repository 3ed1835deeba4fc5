#pragma once
// mmap_store: the tables read in place from memory-mapped safetensors files. Opening costs no load time and
// only the pages a gather touches are ever read, so a 60 GB table set runs in the memory its traffic needs.
// Host memory only; the file dtype must be T (no conversion, no copy).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/store/store.hpp"

namespace ngemb {

template <storage_type T>
class mmap_store {
 public:
  using element_type = T;
  using policy_type = host_policy;

  /// Maps the tables named by `names` (SPEC §4). Shapes must be [V, H] and [m_i, d] and the dtype T; otherwise
  /// format_error names the file and tensor. The store shares ownership of the checkpoint's mappings.
  mmap_store(std::shared_ptr<const safetensors_checkpoint> checkpoint, const ngram_config& config,
             const ngram_tensor_names& names = {})
      : checkpoint_(std::move(checkpoint)), vocab_(config.vocab_size), hidden_(config.hidden_size) {
    config.validate();
    detail::check_table_count(config.num_tables(), "mmap_store");
    rows_.width = config.row_width();
    rows_.hidden = hidden_;
    if (!names.base.empty()) {
      const std::int64_t shape[] = {vocab_, hidden_};
      rows_.base = checkpoint_->tensor<T>(names.base, shape).data();
    }
    for (int table = 0; table < config.num_tables(); ++table) {
      const std::int64_t shape[] = {config.modulus(table), rows_.width};
      rows_.tables[table] = checkpoint_->tensor<T>(names.embedder(table), shape).data();
      row_counts_.push_back(config.modulus(table));
    }
  }

  /// The uniform loader every store has (the policy only selects host memory here).
  static mmap_store load(const host_policy& /*policy*/, std::shared_ptr<const safetensors_checkpoint> checkpoint,
                         const ngram_config& config, const ngram_tensor_names& names = {}) {
    return mmap_store(std::move(checkpoint), config, names);
  }

  /// Writes the mapped tables under `names` (the rows are copied, so a checkpoint can be re-saved elsewhere).
  void save(const host_policy& policy, tensor_collection& out, const ngram_tensor_names& names = {}) const {
    if (has_base()) {
      out.add<T>(policy, names.base, {vocab_, hidden_},
                 view<const T>(rows_.base, static_cast<std::size_t>(vocab_ * hidden_)));
    }
    for (int table = 0; table < num_tables(); ++table) {
      out.add<T>(policy, names.embedder(table), {rows(table), rows_.width},
                 view<const T>(rows_.tables[table], static_cast<std::size_t>(rows(table) * rows_.width)));
    }
  }

  [[nodiscard]] int num_tables() const { return static_cast<int>(row_counts_.size()); }
  [[nodiscard]] std::int64_t rows(int table) const { return row_counts_[static_cast<std::size_t>(table)]; }
  [[nodiscard]] std::int64_t row_width() const { return rows_.width; }
  [[nodiscard]] bool has_base() const { return rows_.base != nullptr; }
  [[nodiscard]] std::int64_t vocab_size() const { return vocab_; }
  [[nodiscard]] std::int64_t hidden_size() const { return hidden_; }
  [[nodiscard]] table_rows_ref<T> ref() const { return rows_; }
  [[nodiscard]] const safetensors_checkpoint& checkpoint() const { return *checkpoint_; }

 private:
  std::shared_ptr<const safetensors_checkpoint> checkpoint_;
  std::int64_t vocab_;
  std::int64_t hidden_;
  std::vector<std::int64_t> row_counts_;
  table_rows_ref<T> rows_;
};

}  // namespace ngemb
