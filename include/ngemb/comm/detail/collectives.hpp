#pragma once
// What every communicator backend checks and counts the same way: the element types each collective moves, the
// argument checks (before any rank sends, so a bad call throws on the caller instead of desynchronising the ranks)
// and the bytes a collective moves between ranks.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>

#include "ngemb/comm/communicator.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"

namespace ngemb::detail {

/// The element types all_to_all_v moves (bits only: no arithmetic on them).
template <class T>
concept communicated_element = std::same_as<T, std::uint32_t> || std::same_as<T, std::int32_t> ||
                               std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, bf16> ||
                               std::same_as<T, fp16>;

/// The element types the sums add: MPI and NCCL both sum float and double natively.
template <class T>
concept summed_element = std::same_as<T, float> || std::same_as<T, double>;

/// `counts` has one entry per rank and sums to the `elements` of the buffer it describes.
inline void check_counts(const char* collective, const char* name, std::span<const std::size_t> counts, int ranks,
                         std::size_t elements) {
  if (counts.size() != static_cast<std::size_t>(ranks)) {
    throw shape_mismatch(std::string(collective) + ": " + name + " has " + std::to_string(counts.size()) +
                         " entries, expected one per rank: " + std::to_string(ranks));
  }
  const std::size_t total = std::accumulate(counts.begin(), counts.end(), std::size_t{0});
  if (total != elements) {
    throw shape_mismatch(std::string(collective) + ": " + name + " sum to " + std::to_string(total) +
                         " elements, but the buffer holds " + std::to_string(elements));
  }
}

/// exchange_counts: both host arrays hold one count per rank.
inline void check_count_arrays(std::size_t send, std::size_t receive, int ranks) {
  const auto expected = static_cast<std::size_t>(ranks);
  if (send != expected || receive != expected) {
    throw shape_mismatch("exchange_counts: send has " + std::to_string(send) + " entries and receive " +
                         std::to_string(receive) + ", expected one per rank: " + std::to_string(ranks));
  }
}

/// reduce_scatter_sum: `in` holds one block of out's size per rank.
inline void check_reduce_scatter(std::size_t in, std::size_t out, int ranks) {
  if (in != out * static_cast<std::size_t>(ranks)) {
    throw shape_mismatch("reduce_scatter_sum: in has " + std::to_string(in) + " elements, expected " +
                         std::to_string(ranks) + " blocks of out's " + std::to_string(out));
  }
}

/// The payload of all_to_all_v that crosses to other ranks: every block but this rank's own.
inline std::uint64_t bytes_to_peers(std::span<const std::size_t> counts, int rank, std::size_t element_bytes) {
  const std::size_t total = std::accumulate(counts.begin(), counts.end(), std::size_t{0});
  return static_cast<std::uint64_t>(total - counts[static_cast<std::size_t>(rank)]) * element_bytes;
}

/// All-reduce and reduce-scatter move what the bandwidth-optimal algorithm (ring or pairwise) moves, in each
/// direction: a reduce-scatter sends the size()-1 blocks this rank does not own, an all-reduce is a reduce-scatter
/// then an all-gather, 2 (P-1)/P of the data (rounded down). The backend's own algorithm may differ; counting the
/// algorithm-independent volume keeps the counters comparable across backends and with all_to_all_v.
inline std::uint64_t reduce_scatter_bytes(std::size_t block_elements, int ranks, std::size_t element_bytes) {
  return static_cast<std::uint64_t>(block_elements) * static_cast<std::uint64_t>(ranks - 1) * element_bytes;
}
inline std::uint64_t all_reduce_bytes(std::size_t elements, int ranks, std::size_t element_bytes) {
  const auto others = static_cast<std::uint64_t>(ranks - 1);
  return 2 * others * static_cast<std::uint64_t>(elements) * element_bytes / static_cast<std::uint64_t>(ranks);
}

/// Adds one collective's traffic to `counters`.
inline void count_collective(communication_counters& counters, std::uint64_t sent, std::uint64_t received) {
  counters.bytes_sent += sent;
  counters.bytes_received += received;
  ++counters.collectives;
}

}  // namespace ngemb::detail
