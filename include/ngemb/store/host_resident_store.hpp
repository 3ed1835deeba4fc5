#pragma once
// host_resident_store: the sub-tables stay in host memory and the policy's gather reads them in place, for a device
// whose memory cannot hold them (LongCat-Flash-Lite's 62.8 GB of sub-tables beside the rest of the model on one
// 141 GB GPU: 12 rows of 512 B per token cross the bus).
//   host_policy    the tables are mmap_store's: read in place from the mapped checkpoint (the same checks and
//                  messages; the stored dtype must be T).
//   device_policy  (store/host_resident_store.cuh) the sub-tables are copied into page-locked host memory mapped into
//                  the device's address space, so the gather kernel reads each row over the bus; the base table E_0
//                  sits in device memory.
// An optional cache of hot rows in policy memory answers lookups first: cache_rows(policy, ids) copies the rows a
// batch of ids uses most into it, behind an open-addressing hash table keyed by (sub-table, row) with a fixed probe
// bound, so a miss costs a few slot reads before the table read. The lookup is one NGEMB_HD function of the ref, so
// the host tests check the logic the device runs.
//
// The cache is filled from the ids of a calibration batch, e.g. a warm-up forward of an embedding without the cache
// (and refreshed later through embedding.store().cache_rows(policy, embedding.last_ids())):
//   auto store = ngemb::host_resident_store<ngemb::bf16, ngemb::device_policy>::load(policy, source, prefix, config,
//                                                                                 {.cached_rows = 1 << 20});
//   store.cache_rows(policy, warmup.last_ids());
//   ngemb::ngram_embedding<ngemb::longcat_hash, decltype(store)> embedding(config, std::move(store), projection);
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/row_chunks.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"
#include "ngemb/store/mmap_store.hpp"
#include "ngemb/store/store.hpp"

namespace ngemb {

struct host_resident_options {
  /// Rows the hot-row cache holds at most (0: no cache). More than the sub-tables' rows together is rejected
  /// (invalid_argument): such a count can only be a mistaken unit, and clamping would hide it.
  std::size_t cached_rows = 0;
};

/// One slot of the hot-row cache's hash table: a row's key (sub-table * 2^32 + row id) and its row in the cache.
struct row_cache_slot {
  static constexpr std::uint64_t empty = ~std::uint64_t{0};  // no key: sub-table 2^32 - 1 does not exist
  std::uint64_t key = empty;
  std::uint64_t index = 0;
};

namespace detail {

/// A lookup reads at most this many slots from a key's home slot; filling the cache keeps every key within it.
inline constexpr int row_cache_probes = 8;

NGEMB_HD inline std::uint64_t row_cache_key(int table, std::uint64_t id) {
  return (static_cast<std::uint64_t>(table) << 32) | id;
}

/// The slot a key's probe starts at. The ids are hashes already, but the sub-table sits in the high bits: mixing
/// (MurmurHash3's finaliser) spreads both over the low bits the mask keeps.
NGEMB_HD inline std::uint64_t row_cache_home(std::uint64_t key, std::uint64_t mask) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdull;
  key ^= key >> 33;
  return key & mask;
}

/// Slots for `keys` by linear probing, the i-th key naming cache row i; false when a key would lie more than
/// row_cache_probes slots from its home (the caller then doubles the table).
inline bool place_row_keys(const std::vector<std::uint64_t>& keys, std::size_t slots,
                           std::vector<row_cache_slot>& table) {
  table.assign(slots, row_cache_slot{});
  const std::uint64_t mask = slots - 1;
  for (std::size_t index = 0; index < keys.size(); ++index) {
    std::uint64_t slot = row_cache_home(keys[index], mask);
    for (int probe = 1; table[slot].key != row_cache_slot::empty; ++probe) {
      if (probe == row_cache_probes) {
        return false;
      }
      slot = (slot + 1) & mask;
    }
    table[slot] = row_cache_slot{keys[index], index};
  }
  return true;
}

/// Copies one chunk of the row `keys[row]` names from the tables into row `row` of the cache.
template <storage_type T>
struct copy_cached_rows_op {
  table_rows_ref<T> tables;
  const std::uint64_t* keys;
  T* cache;
  row_chunks chunks;

  NGEMB_HD void operator()(std::size_t index) const {
    const row_chunks::part part = chunks.locate(index);
    const std::uint64_t key = keys[part.row];
    const T* source = tables.row(static_cast<int>(key >> 32), key & 0xffffffffu);
    T* destination = cache + part.row * chunks.width;
    for (std::size_t column = part.begin; column < part.end; ++column) {
      destination[column] = source[column];
    }
  }
};

/// Where a host_resident_store keeps its tables under a policy: the host reads the mapped checkpoint in place;
/// store/host_resident_store.cuh adds the device's mapped page-locked tables.
template <storage_type T, class Policy>
struct resident_tables {
  static_assert(sizeof(Policy) == 0, "host_resident_store: no tables for this policy (for device_policy include "
                                     "ngemb/store/host_resident_store.cuh)");
};

template <storage_type T>
struct resident_tables<T, host_policy> {
  using type = mmap_store<T>;
};

}  // namespace detail

/// The tables' rows behind the hot-row cache: row() answers from the cache when it holds the row. The members of
/// table_rows_ref (base, width, hidden) keep their meaning, so every element operation reads this ref unchanged.
template <storage_type T>
struct host_resident_rows_ref : table_rows_ref<T> {
  const row_cache_slot* cache_slots = nullptr;  ///< null: no cache
  const T* cache_rows = nullptr;                ///< [cached rows x width]
  std::uint64_t cache_mask = 0;                 ///< slots - 1 (the slot count is a power of two)

  NGEMB_HD const T* row(int table, std::uint64_t id) const {
    const T* cached = cached_row(table, id);
    return cached != nullptr ? cached : table_rows_ref<T>::row(table, id);
  }

  /// The row's copy in the cache, or null after at most row_cache_probes slot reads.
  NGEMB_HD const T* cached_row(int table, std::uint64_t id) const {
    if (cache_slots == nullptr) {
      return nullptr;
    }
    const std::uint64_t key = detail::row_cache_key(table, id);
    std::uint64_t slot = detail::row_cache_home(key, cache_mask);
    for (int probe = 0; probe < detail::row_cache_probes; ++probe) {
      const row_cache_slot entry = cache_slots[slot];
      if (entry.key == key) {
        return cache_rows + entry.index * static_cast<std::uint64_t>(this->width);
      }
      if (entry.key == row_cache_slot::empty) {
        return nullptr;
      }
      slot = (slot + 1) & cache_mask;
    }
    return nullptr;
  }
};

template <storage_type T, class Policy = host_policy>
class host_resident_store {
 public:
  using element_type = T;
  using policy_type = Policy;
  /// mmap_store<T> on the host; detail::mapped_host_tables<T> under device_policy.
  using tables_type = typename detail::resident_tables<T, Policy>::type;

  /// The tables with room for `options.cached_rows` hot rows (the cache starts empty: see cache_rows).
  explicit host_resident_store(tables_type tables, host_resident_options options = {})
      : tables_(std::move(tables)), options_(options) {
    std::uint64_t total = 0;
    for (int table = 0; table < num_tables(); ++table) {
      total += static_cast<std::uint64_t>(rows(table));
    }
    check_cache_size(options_, total);
  }

  /// The tables as the policy keeps them (see the top of the file): the names and shapes of table_store::load.
  static host_resident_store load(const Policy& policy, std::shared_ptr<const checkpoint> source,
                                  const std::string& prefix, const ngram_config& config,
                                  host_resident_options options = {}) {
    config.validate();
    std::uint64_t total = 0;
    for (int table = 0; table < config.num_tables(); ++table) {
      total += static_cast<std::uint64_t>(config.modulus(table));
    }
    check_cache_size(options, total);  // before reading gigabytes of tables
    return host_resident_store(tables_type::load(policy, std::move(source), prefix, config), options);
  }

  /// Writes the tables under the names load() reads (the cache holds copies only and is not saved).
  void save(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    tables_.save(policy, prefix, out);
  }

  [[nodiscard]] int num_tables() const { return tables_.num_tables(); }
  [[nodiscard]] std::int64_t rows(int table) const { return tables_.rows(table); }
  [[nodiscard]] std::int64_t row_width() const { return tables_.row_width(); }
  [[nodiscard]] bool has_base() const { return tables_.has_base(); }
  [[nodiscard]] std::int64_t vocab_size() const { return tables_.vocab_size(); }
  [[nodiscard]] std::int64_t hidden_size() const { return tables_.hidden_size(); }
  [[nodiscard]] const tables_type& tables() const { return tables_; }
  [[nodiscard]] const host_resident_options& options() const { return options_; }
  /// Rows the cache holds now (at most options().cached_rows).
  [[nodiscard]] std::size_t cached_rows() const { return cache_.size() / static_cast<std::size_t>(row_width()); }

  [[nodiscard]] host_resident_rows_ref<T> ref() const {
    if (cache_.size() == 0) {
      return {tables_.ref()};
    }
    return {tables_.ref(), slots_.data(), cache_.data(), static_cast<std::uint64_t>(slots_.size() - 1)};
  }

  /// Fills the cache with the options().cached_rows rows that occur most often in `ids` (ties: the smaller
  /// sub-table, then the smaller row), replacing what it held. `ids` is [tokens x T] in the per-table layout
  /// ngram_embedding::last_ids() gives, in policy memory; they are copied to the host and counted there, and the
  /// rows are copied by the policy from the tables. Waits for the copies. Throws shape_mismatch for a size that is
  /// not a multiple of T and invalid_argument for an id outside its sub-table.
  void cache_rows(const Policy& policy, view<const std::uint32_t> ids) {
    const std::vector<std::uint64_t> hot = hottest_rows(policy, ids);
    std::vector<row_cache_slot> table;
    // Load factor 1/2 or less, so the probe bound is nearly always met at once; doubling settles the rest.
    std::size_t slots = std::bit_ceil(std::max<std::size_t>(2, 2 * hot.size()));
    while (!detail::place_row_keys(hot, slots, table)) {
      slots *= 2;
    }
    slots_ = {};
    cache_ = {};
    if (hot.empty()) {
      return;
    }
    const auto width = static_cast<std::size_t>(row_width());
    typename Policy::template buffer<T> cache(policy, hot.size() * width);
    const auto keys = upload(policy, view<const std::uint64_t>(hot));
    const detail::row_chunks chunks(width, row_chunk(policy));
    for_each_n(for_operations_of(policy, chunks.chunk), chunks.count(hot.size()),
               detail::copy_cached_rows_op<T>{tables_.ref(), keys.data(), cache.data(), chunks});
    slots_ = upload(policy, view<const row_cache_slot>(table));
    synchronize(policy);  // the cache is complete for work on any stream, and `keys` may go
    cache_ = std::move(cache);
  }

 private:
  static void check_cache_size(const host_resident_options& options, std::uint64_t total_rows) {
    if (options.cached_rows > total_rows) {
      throw invalid_argument("host_resident_store: cached_rows = " + std::to_string(options.cached_rows) +
                             " exceeds the " + std::to_string(total_rows) + " rows of all sub-tables");
    }
  }

  /// The keys of the options().cached_rows most frequent rows of `ids`, most frequent first.
  std::vector<std::uint64_t> hottest_rows(const Policy& policy, view<const std::uint32_t> ids) const {
    const auto tables = static_cast<std::size_t>(num_tables());
    if (ids.size() % tables != 0) {
      throw shape_mismatch("host_resident_store::cache_rows: " + std::to_string(ids.size()) +
                           " ids are not whole tokens of T = " + std::to_string(tables) + " ids");
    }
    std::vector<std::uint32_t> host(ids.size());
    copy_to_host(policy, ids, view<std::uint32_t>(host));
    std::unordered_map<std::uint64_t, std::size_t> counts;
    for (std::size_t position = 0; position < host.size(); ++position) {
      const auto table = static_cast<int>(position % tables);
      if (host[position] >= static_cast<std::uint64_t>(rows(table))) {
        throw invalid_argument("host_resident_store::cache_rows: id " + std::to_string(host[position]) +
                               " at position " + std::to_string(position) + " is outside sub-table " +
                               std::to_string(table) + "'s rows [0, " + std::to_string(rows(table)) + ")");
      }
      ++counts[detail::row_cache_key(table, host[position])];
    }
    std::vector<std::pair<std::uint64_t, std::size_t>> ranked(counts.begin(), counts.end());
    const std::size_t kept = std::min(options_.cached_rows, ranked.size());
    std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(kept), ranked.end(),
                      [](const auto& left, const auto& right) {
                        return left.second != right.second ? left.second > right.second : left.first < right.first;
                      });
    std::vector<std::uint64_t> keys;
    for (std::size_t index = 0; index < kept; ++index) {
      keys.push_back(ranked[index].first);
    }
    return keys;
  }

  tables_type tables_;
  host_resident_options options_;
  typename Policy::template buffer<row_cache_slot> slots_;
  typename Policy::template buffer<T> cache_;  ///< [cached rows x width], row i the key of slot index i
};

static_assert(detail::check_store<host_resident_store<float>>());

}  // namespace ngemb
