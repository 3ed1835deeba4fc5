#pragma once
// host_resident_store under device_policy: the sub-tables in page-locked host memory mapped into the device's address
// space (policy/mapped_host_buffer.cuh), the base table E_0 in device memory, where each token reads its row whole
// and V x H is small beside the sub-tables (0.8 GB against 62.8 GB for LongCat-Flash-Lite). Include this header
// only from nvcc-compiled code.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/device_buffer.cuh"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/mapped_host_buffer.cuh"
#include "ngemb/store/host_resident_store.hpp"
#include "ngemb/store/store.hpp"

namespace ngemb {

namespace detail {

/// The tables of a host_resident_store<T, device_policy>: the sub-tables back to back in one mapped page-locked
/// host buffer at exclusive row offsets, the base table in a device buffer. ref() hands out device addresses.
template <storage_type T>
class mapped_host_tables {
 public:
  /// Pins the sub-tables for `config` and allocates the base table [V x H] on the device (or none), contents
  /// unspecified: fill them through table(i) on the host and base() on the device (an initialiser, a custom loader).
  mapped_host_tables(const device_policy& policy, const ngram_config& config, bool with_base)
      : vocab_size_(config.vocab_size), hidden_(config.hidden_size), width_(config.row_width()) {
    config.validate();
    check_table_count(config.num_tables(), "host_resident_store");
    std::int64_t offset = 0;
    for (int table = 0; table < config.num_tables(); ++table) {
      rows_.push_back(config.modulus(table));
      offsets_.push_back(offset);
      offset += config.modulus(table);
    }
    tables_ = mapped_host_buffer<T>(static_cast<std::size_t>(offset * width_));
    if (with_base) {
      base_ = device_buffer<T>(policy, static_cast<std::size_t>(vocab_size_ * hidden_));
    }
  }

  /// Reads the tensors table_store::load reads, in any float dtype (converted to T by read_tensor_into), each
  /// checked before anything is allocated or pinned. The sub-tables are converted straight into the pinned memory.
  static mapped_host_tables load(const device_policy& policy, const std::shared_ptr<const checkpoint>& source,
                                 const std::string& prefix, const ngram_config& config) {
    config.validate();
    const std::string base = ngram_names::base_table(prefix);
    const std::string module = ngram_names::module(prefix);
    const std::int64_t base_shape[] = {config.vocab_size, config.hidden_size};
    const bool with_base = source->contains(base);
    if (with_base) {
      check_float_tensor(*source, base, base_shape);
    }
    for (int table = 0; table < config.num_tables(); ++table) {
      const std::int64_t shape[] = {config.modulus(table), config.row_width()};
      check_float_tensor(*source, ngram_names::embedder(module, table), shape);
    }
    mapped_host_tables tables(policy, config, with_base);
    if (with_base) {
      std::vector<T> staging(tables.base_.size());
      read_tensor_into<T>(*source, base, base_shape, std::span<T>(staging));
      copy_to(policy, view<const T>(staging), tables.base_.as_view());
      synchronize(policy);  // the staging vector dies here
    }
    for (int table = 0; table < tables.num_tables(); ++table) {
      const std::int64_t shape[] = {tables.rows(table), tables.width_};
      const view<T> rows = tables.table(table);
      read_tensor_into<T>(*source, ngram_names::embedder(module, table), shape, std::span<T>(rows.data(), rows.size()));
    }
    return tables;
  }

  /// Writes the tables under the names load() reads, in T; the host reads the pinned sub-tables in place.
  void save(const device_policy& policy, const std::string& prefix, tensor_collection& out) const {
    if (has_base()) {
      out.add<T>(policy, ngram_names::base_table(prefix), {vocab_size_, hidden_}, base_.as_view());
    }
    const std::string module = ngram_names::module(prefix);
    for (int table = 0; table < num_tables(); ++table) {
      out.add<T>(host_policy{}, ngram_names::embedder(module, table), {rows(table), width_},
                 tables_.as_view().subview(table_offset(table), table_elements(table)));
    }
  }

  [[nodiscard]] int num_tables() const { return static_cast<int>(rows_.size()); }
  [[nodiscard]] std::int64_t rows(int table) const { return rows_[static_cast<std::size_t>(table)]; }
  [[nodiscard]] std::int64_t row_width() const { return width_; }
  [[nodiscard]] bool has_base() const { return base_.size() != 0; }
  [[nodiscard]] std::int64_t vocab_size() const { return vocab_size_; }
  [[nodiscard]] std::int64_t hidden_size() const { return hidden_; }
  /// Bytes pinned in host memory (the sub-tables) and held in device memory (the base table).
  [[nodiscard]] std::size_t pinned_bytes() const { return tables_.size() * sizeof(T); }
  [[nodiscard]] std::size_t device_bytes() const { return base_.size() * sizeof(T); }

  /// Sub-table i [m_i x d] in pinned host memory (the host's addresses) and the base table [V x H] on the device.
  [[nodiscard]] view<T> table(int index) {
    return tables_.as_view().subview(table_offset(index), table_elements(index));
  }
  [[nodiscard]] view<T> base() { return base_.as_view(); }

  /// Device addresses: the sub-tables' mapped rows and the base table.
  [[nodiscard]] table_rows_ref<T> ref() const {
    table_rows_ref<T> rows;
    for (int table = 0; table < num_tables(); ++table) {
      rows.tables[table] = tables_.device_data() + table_offset(table);
    }
    rows.base = has_base() ? base_.data() : nullptr;
    rows.width = width_;
    rows.hidden = hidden_;
    return rows;
  }

 private:
  [[nodiscard]] std::size_t table_offset(int table) const {
    return static_cast<std::size_t>(offsets_[static_cast<std::size_t>(table)] * width_);
  }
  [[nodiscard]] std::size_t table_elements(int table) const { return static_cast<std::size_t>(rows(table) * width_); }

  std::int64_t vocab_size_;
  std::int64_t hidden_;
  std::int64_t width_;
  std::vector<std::int64_t> rows_;
  std::vector<std::int64_t> offsets_;
  device_buffer<T> base_;
  mapped_host_buffer<T> tables_;
};

template <storage_type T>
struct resident_tables<T, device_policy> {
  using type = mapped_host_tables<T>;
};

}  // namespace detail

static_assert(detail::check_store<host_resident_store<bf16, device_policy>>());

}  // namespace ngemb
