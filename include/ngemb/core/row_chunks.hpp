#pragma once
// Splits rows of a fixed width into chunks so one element operation covers `chunk` consecutive elements of one
// row: the same operation runs whole rows on the host and a few elements per thread on a device.
#include <cstddef>
#include <cstdint>

#include "ngemb/core/macros.hpp"

namespace ngemb::detail {

struct row_chunks {
  std::size_t width = 0;
  std::size_t chunk = 1;
  std::size_t per_row = 0;

  NGEMB_HD row_chunks(std::size_t row_width, std::size_t wanted_chunk)
      : width(row_width),
        chunk(wanted_chunk < 1 ? 1 : (wanted_chunk > row_width ? (row_width < 1 ? 1 : row_width) : wanted_chunk)),
        per_row((row_width + chunk - 1) / chunk) {}

  /// Element operations needed for `rows` rows.
  NGEMB_HD std::size_t count(std::size_t rows) const { return rows * per_row; }

  struct part {
    std::size_t row;
    std::size_t begin;
    std::size_t end;
  };
  NGEMB_HD part locate(std::size_t index) const {
    const std::size_t row = index / per_row;
    const std::size_t begin = (index - row * per_row) * chunk;
    const std::size_t end = begin + chunk < width ? begin + chunk : width;
    return {row, begin, end};
  }
};

/// Rows ahead whose cache lines a host thread copying random table rows requests before copying the current one.
inline constexpr std::size_t row_prefetch_distance = 4;

/// Asks for the cache lines of a row a host thread will copy soon: rows are random lines of gigabyte tables, and a
/// thread copying one row at a time would wait out each miss alone. (A device hides misses with warps: no-op.)
template <class T>
NGEMB_HD void prefetch_row(const T* row, std::size_t elements) {
#if !NGEMB_IN_DEVICE_CODE && defined(__GNUC__)
  const auto* bytes = reinterpret_cast<const char*>(row);
  for (std::size_t line = 0; line < elements * sizeof(T); line += 64) {
    __builtin_prefetch(bytes + line);
  }
#else
  (void)row;
  (void)elements;
#endif
}

}  // namespace ngemb::detail
