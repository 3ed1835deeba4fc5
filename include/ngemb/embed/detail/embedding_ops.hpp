#pragma once
// The element operations of the embedding forward, shared by host and device: gather one chunk of a sub-table
// row into the GEMM's input, compute one token's amplification statistics, and combine one chunk of a token's
// output from the base row and the projected n-gram branch.
#include <cstddef>
#include <cstdint>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/row_chunks.hpp"
#include "ngemb/embed/amplification.hpp"

namespace ngemb::detail {

/// Row r = token * T + table of the gathered matrix [tokens x T*d] is sub-table `table`'s row ids[r]: the rows of
/// one token sit side by side, in the column order of W_cat.
template <class StoreRef, class Acc>
struct gather_rows_op {
  StoreRef rows;
  const std::uint32_t* ids;
  Acc* gathered;
  int tables;
  std::size_t num_rows;
  row_chunks chunks;

  NGEMB_HD const auto* source_row(std::size_t row) const {
    return rows.row(static_cast<int>(row % static_cast<std::size_t>(tables)), ids[row]);
  }

  NGEMB_HD void operator()(std::size_t index) const {
    const row_chunks::part part = chunks.locate(index);
    const auto* source = source_row(part.row);
    if (part.begin == 0 && part.row + row_prefetch_distance < num_rows) {
      prefetch_row(source_row(part.row + row_prefetch_distance), chunks.width);
    }
    Acc* destination = gathered + part.row * chunks.width;
    for (std::size_t column = part.begin; column < part.end; ++column) {
      destination[column] = convert<Acc>(source[column]);
    }
  }
};

template <class AmplificationRef, class Acc>
struct row_statistics_op {
  AmplificationRef amplification;
  const Acc* branch;
  row_statistics<Acc>* statistics;
  std::int64_t width;

  NGEMB_HD void operator()(std::size_t token) const {
    statistics[token] = amplification.statistics(branch + token * static_cast<std::size_t>(width), width);
  }
};

/// out = (base row + a(branch)) / divisor, chunk by chunk; `statistics` is null when the amplification needs none,
/// `rows.base` null when there is no base table. A token outside [0, vocab_size) (possible only while its check is
/// deferred, and then reported by it) adds no base row instead of reading outside the table.
template <class StoreRef, class Token, class AmplificationRef, class Acc, class Out>
struct combine_op {
  StoreRef rows;
  const Token* tokens;
  AmplificationRef amplification;
  const Acc* branch;
  const row_statistics<Acc>* statistics;
  Out* out;
  Acc divisor;
  std::uint64_t vocab_size;
  row_chunks chunks;

  NGEMB_HD void operator()(std::size_t index) const {
    const row_chunks::part part = chunks.locate(index);
    const row_statistics<Acc> stats = statistics != nullptr ? statistics[part.row] : row_statistics<Acc>{};
    const Acc* branch_row = branch + part.row * chunks.width;
    Out* out_row = out + part.row * chunks.width;
    const auto token = rows.base != nullptr ? static_cast<std::uint64_t>(tokens[part.row]) : vocab_size;
    const auto* base = token < vocab_size ? rows.base_row(token) : nullptr;
    for (std::size_t column = part.begin; column < part.end; ++column) {
      Acc value = amplification.apply(branch_row[column], static_cast<std::int64_t>(column), stats);
      if (base != nullptr) {
        value += convert<Acc>(base[column]);
      }
      out_row[column] = convert<Out>(value / divisor);
    }
  }
};

}  // namespace ngemb::detail
