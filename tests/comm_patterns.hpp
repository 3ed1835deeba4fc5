#pragma once
// What the comm tests send: ragged counts and random, never-zero values that any rank can regenerate for any peer
// from the peer's seed, so each rank computes what it must receive without trusting the communicator.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "ngemb/core/dtype.hpp"

namespace comm_patterns {

/// The all_to_all_v rounds: ragged counts with zeros; rank 0 sending nothing and the last rank receiving nothing
/// (empty totals); nothing at all; and blocks of a few thousand elements.
inline constexpr int rounds = 4;

inline std::size_t count(int sender, int receiver, int ranks, int round) {
  const auto s = static_cast<std::size_t>(sender);
  const auto r = static_cast<std::size_t>(receiver);
  switch (round) {
    case 0:
      return (3 * s + 5 * r + 1) % 4;
    case 1:
      return sender == 0 || receiver == ranks - 1 ? 0 : (s + r) % 3 + 1;
    case 2:
      return 0;
    default:
      return 1000 + 17 * s + 31 * r;
  }
}

/// One count per peer: what `rank` sends to each (sending) or receives from each (receiving).
inline std::vector<std::size_t> counts(int rank, int ranks, int round, bool sending) {
  std::vector<std::size_t> result(static_cast<std::size_t>(ranks));
  for (int peer = 0; peer < ranks; ++peer) {
    result[static_cast<std::size_t>(peer)] =
        sending ? count(rank, peer, ranks, round) : count(peer, rank, ranks, round);
  }
  return result;
}

/// A random value that is never zero: nonzero integers, and floating values of magnitude in [0.25, 4).
template <class T>
T nonzero_value(std::mt19937& random) {
  if constexpr (std::is_same_v<T, std::uint32_t>) {
    return std::uniform_int_distribution<std::uint32_t>(1, UINT32_MAX)(random);
  } else if constexpr (std::is_same_v<T, std::int32_t>) {
    const std::int32_t magnitude = std::uniform_int_distribution<std::int32_t>(1, INT32_MAX)(random);
    return random() % 2 == 0 ? magnitude : -magnitude;
  } else {
    const double magnitude = std::uniform_real_distribution<double>(0.25, 4.0)(random);
    const double value = random() % 2 == 0 ? magnitude : -magnitude;
    if constexpr (std::is_floating_point_v<T>) {
      return static_cast<T>(value);
    } else {
      return T(static_cast<float>(value));  // bf16, fp16
    }
  }
}

/// The `size` values `sender` puts in its block for `receiver` (or in its block `receiver` of a reduce-scatter).
template <class T>
std::vector<T> block(int sender, int receiver, int round, std::size_t size) {
  std::seed_seq seed{sender, receiver, round, 2024};
  std::mt19937 random(seed);
  std::vector<T> values(size);
  for (T& value : values) {
    value = nonzero_value<T>(random);
  }
  return values;
}

/// Blocks for (or from) every peer, back to back in rank order.
template <class T>
std::vector<T> blocks(int rank, int ranks, int round, bool sending) {
  std::vector<T> result;
  for (int peer = 0; peer < ranks; ++peer) {
    const std::vector<T> part = sending ? block<T>(rank, peer, round, count(rank, peer, ranks, round))
                                        : block<T>(peer, rank, round, count(peer, rank, ranks, round));
    result.insert(result.end(), part.begin(), part.end());
  }
  return result;
}

/// Sizes of the summed buffers: empty, one element, and sizes that are not multiples of anything in particular.
inline constexpr std::size_t sum_sizes[] = {0, 1, 1000, 4099};

/// The fp64 sum over `ranks` of every rank's block(rank, column, round, size) as T, and the bound on a T sum's
/// error in any order: each of the ranks - 1 additions and the final rounding err by at most half an ulp of the
/// running magnitude, so |T sum - fp64 sum| <= ranks * epsilon(T) * sum of |values|.
struct reference {
  std::vector<double> sum;
  std::vector<double> tolerance;
};

template <class T>
reference reference_sum(int ranks, int column, int round, std::size_t size) {
  reference result{std::vector<double>(size, 0.0), std::vector<double>(size, 0.0)};
  for (int rank = 0; rank < ranks; ++rank) {
    const std::vector<T> part = block<T>(rank, column, round, size);
    for (std::size_t i = 0; i < size; ++i) {
      result.sum[i] += static_cast<double>(part[i]);
      result.tolerance[i] += std::abs(static_cast<double>(part[i]));
    }
  }
  for (double& tolerance : result.tolerance) {
    tolerance *= ranks * static_cast<double>(std::numeric_limits<T>::epsilon());
  }
  return result;
}

}  // namespace comm_patterns
