#pragma once
// What sharded_store shares between host and device: the split of the concatenated sub-tables over the ranks, the
// host-side bucketing of a batch's ids by owner, and the element operations that serve requests from the local
// shard, scatter the answers back into the gathered matrix, and gather a rank's own rows for partial projection.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/row_chunks.hpp"
#include "ngemb/store/store.hpp"

namespace ngemb::detail {

/// The rows of one rank's shard, per sub-table, in a form element operations can carry by value.
struct shard_rows {
  static constexpr int max_tables = table_rows_ref<float>::max_tables;
  std::int64_t first[max_tables] = {};   ///< the shard's first row of each sub-table
  std::int64_t count[max_tables] = {};   ///< how many rows of each sub-table the shard holds
  std::int64_t offset[max_tables + 1] = {};  ///< exclusive prefix sum of count: the shard's own concatenation
  int tables = 0;

  /// The shard's `index`-th row of its concatenation, in `local`, the Local store's ref (the sub-table is found
  /// by a scan: tables <= 64).
  template <class LocalRef>
  NGEMB_HD const auto* row(const LocalRef& local, std::uint64_t index) const {
    int table = 0;
    while (table + 1 < tables && static_cast<std::uint64_t>(offset[table + 1]) <= index) {
      ++table;
    }
    return local.row(table, index - static_cast<std::uint64_t>(offset[table]));
  }
};

/// Rows of gathered [count x T*d] (the layout of gather_rows_op) from the answers of other ranks: answer row s,
/// in the order the requests were sent, is gathered row rows[s].
template <class T, class Acc>
struct scatter_answers_op {
  const T* answers;
  const std::uint32_t* rows;
  Acc* gathered;
  row_chunks chunks;

  NGEMB_HD void operator()(std::size_t index) const {
    const row_chunks::part part = chunks.locate(index);
    const T* source = answers + part.row * chunks.width;
    Acc* destination = gathered + static_cast<std::size_t>(rows[part.row]) * chunks.width;
    for (std::size_t column = part.begin; column < part.end; ++column) {
      destination[column] = convert<Acc>(source[column]);
    }
  }
};

/// Rows read from this rank's shard: destination row j (or rows[j], when a row map is given) is the shard's row
/// requests[j], an index into the shard's concatenation. It serves other ranks' requests (into a reply in the
/// storage type, so the reply moves as few bytes as the tables hold) and this rank's own rows (in place into the
/// gathered matrix: they never pass through the all-to-all).
template <class LocalRef, class Out>
struct copy_shard_rows_op {
  LocalRef local;
  shard_rows shard;
  const std::uint32_t* requests;
  const std::uint32_t* rows;  ///< null: destination rows in request order
  Out* destination;
  std::size_t num_requests;
  row_chunks chunks;

  NGEMB_HD void operator()(std::size_t index) const {
    const row_chunks::part part = chunks.locate(index);
    if (part.begin == 0 && part.row + row_prefetch_distance < num_requests) {
      prefetch_row(shard.row(local, requests[part.row + row_prefetch_distance]), chunks.width);
    }
    const auto* source = shard.row(local, requests[part.row]);
    const std::size_t row = rows != nullptr ? static_cast<std::size_t>(rows[part.row]) : part.row;
    Out* target = destination + row * chunks.width;
    for (std::size_t column = part.begin; column < part.end; ++column) {
      target[column] = convert<Out>(source[column]);
    }
  }
};

/// The partial-projection input [count x (last - first) * d]: for each token and each sub-table in [first, last)
/// the row when this shard holds it, zeros otherwise (the other ranks add those rows' share).
template <class LocalRef, class Acc>
struct gather_owned_op {
  LocalRef local;
  shard_rows shard;
  const std::uint32_t* ids;  ///< [count x T], the hashed ids of every sub-table
  Acc* gathered;
  int tables;       ///< T
  int first_table;  ///< the columns of sub-tables [first_table, first_table + owned_tables)
  int owned_tables;
  row_chunks chunks;

  NGEMB_HD void operator()(std::size_t index) const {
    const row_chunks::part part = chunks.locate(index);
    const std::size_t token = part.row / static_cast<std::size_t>(owned_tables);
    const int table = first_table + static_cast<int>(part.row % static_cast<std::size_t>(owned_tables));
    const std::int64_t id = ids[token * static_cast<std::size_t>(tables) + static_cast<std::size_t>(table)];
    const std::int64_t local_row = id - shard.first[table];
    Acc* destination = gathered + part.row * chunks.width;
    if (local_row >= 0 && local_row < shard.count[table]) {
      const auto* source = local.row(table, static_cast<std::uint64_t>(local_row));
      for (std::size_t column = part.begin; column < part.end; ++column) {
        destination[column] = convert<Acc>(source[column]);
      }
    } else {
      for (std::size_t column = part.begin; column < part.end; ++column) {
        destination[column] = Acc{0};
      }
    }
  }
};

/// The contiguous split of the concatenated sub-tables (global row = offset_i + row, offsets the exclusive prefix
/// sum of the m_i) over `ranks`: rank r owns global rows [R*r/P, R*(r+1)/P), R = sum m_i.
class table_split {
 public:
  static constexpr int max_ranks = 1 << 20;

  table_split(std::span<const std::int64_t> table_rows, int ranks) : ranks_(ranks) {
    if (ranks < 1 || ranks > max_ranks) {
      throw invalid_argument("sharded_store: needs 1.." + std::to_string(max_ranks) + " ranks, got " +
                             std::to_string(ranks));
    }
    table_offsets_.push_back(0);
    for (const std::int64_t rows : table_rows) {
      table_offsets_.push_back(table_offsets_.back() + rows);
    }
    const std::int64_t total = table_offsets_.back();
    for (int rank = 0; rank <= ranks; ++rank) {
      bounds_.push_back(total * rank / ranks);  // R < 2^38 (64 tables of < 2^32 rows): no overflow below 2^24 ranks
    }
  }

  [[nodiscard]] int ranks() const { return ranks_; }
  [[nodiscard]] int tables() const { return static_cast<int>(table_offsets_.size()) - 1; }
  /// The first global row of rank r (r = ranks(): R).
  [[nodiscard]] std::int64_t bound(int rank) const { return bounds_[static_cast<std::size_t>(rank)]; }
  [[nodiscard]] std::int64_t table_offset(int table) const { return table_offsets_[static_cast<std::size_t>(table)]; }

  /// The rank owning a global row (ranks with empty shards own none).
  [[nodiscard]] int owner(std::int64_t global) const {
    return static_cast<int>(std::upper_bound(bounds_.begin(), bounds_.end(), global) - bounds_.begin()) - 1;
  }

  /// Rank r's rows of each sub-table (count 0 where it holds none).
  [[nodiscard]] std::vector<row_range> ranges(int rank) const {
    std::vector<row_range> result;
    for (int table = 0; table < tables(); ++table) {
      const std::int64_t begin = std::max(bound(rank), table_offset(table));
      const std::int64_t end = std::min(bound(rank + 1), table_offset(table + 1));
      result.push_back(end > begin ? row_range{begin - table_offset(table), end - begin}
                                   : row_range{0, 0});
    }
    return result;
  }

  /// Rank r's ranges in the form the element operations carry.
  [[nodiscard]] shard_rows shard(int rank) const {
    shard_rows shard;
    shard.tables = tables();
    const std::vector<row_range> rows = ranges(rank);
    for (int table = 0; table < tables(); ++table) {
      shard.first[table] = rows[static_cast<std::size_t>(table)].first;
      shard.count[table] = rows[static_cast<std::size_t>(table)].count;
      shard.offset[table + 1] = shard.offset[table] + shard.count[table];
    }
    return shard;
  }

 private:
  int ranks_;
  std::vector<std::int64_t> table_offsets_;
  std::vector<std::int64_t> bounds_;
};

/// A batch's requests bucketed by owner. Requests for other ranks: how many per rank (0 for this one), the
/// requests themselves grouped by rank (indices into the owner's shard), and for each the gathered row its answer
/// fills. Requests this rank serves itself: the request and the gathered row, kept out of the all-to-all.
struct bucketed_requests {
  std::vector<std::size_t> counts;
  std::vector<std::uint32_t> requests;
  std::vector<std::uint32_t> answer_rows;
  std::vector<std::uint32_t> local_requests;
  std::vector<std::uint32_t> local_rows;

  /// ids [count x T] in the per-table layout, on the host.
  void bucket(const table_split& split, int self, std::span<const std::uint32_t> ids) {
    const auto tables = static_cast<std::size_t>(split.tables());
    const auto ranks = static_cast<std::size_t>(split.ranks());
    counts.assign(ranks, 0);
    owners_.resize(ids.size());
    local_requests.clear();
    local_rows.clear();
    for (std::size_t row = 0; row < ids.size(); ++row) {
      const int table = static_cast<int>(row % tables);
      if (ids[row] >= split.table_offset(table + 1) - split.table_offset(table)) {
        throw invalid_argument("sharded_store::lookup: token " + std::to_string(row / tables) + " asks for row " +
                               std::to_string(ids[row]) + " of sub-table " + std::to_string(table) + ", which has " +
                               std::to_string(split.table_offset(table + 1) - split.table_offset(table)) + " rows");
      }
      const std::int64_t global = split.table_offset(table) + ids[row];
      const int owner = split.owner(global);
      owners_[row] = static_cast<std::uint32_t>(owner);
      if (owner == self) {
        local_requests.push_back(static_cast<std::uint32_t>(global - split.bound(self)));
        local_rows.push_back(static_cast<std::uint32_t>(row));
      } else {
        ++counts[static_cast<std::size_t>(owner)];
      }
    }
    cursor_.resize(ranks);
    std::exclusive_scan(counts.begin(), counts.end(), cursor_.begin(), std::size_t{0});
    const std::size_t remote = ids.size() - local_rows.size();
    requests.resize(remote);
    answer_rows.resize(remote);
    for (std::size_t row = 0; row < ids.size(); ++row) {
      const std::uint32_t owner = owners_[row];
      if (static_cast<int>(owner) == self) {
        continue;
      }
      const std::size_t slot = cursor_[owner]++;
      requests[slot] = static_cast<std::uint32_t>(split.table_offset(static_cast<int>(row % tables)) + ids[row] -
                                                  split.bound(static_cast<int>(owner)));
      answer_rows[slot] = static_cast<std::uint32_t>(row);
    }
  }

 private:
  std::vector<std::uint32_t> owners_;
  std::vector<std::size_t> cursor_;
};

}  // namespace ngemb::detail
