#pragma once
// Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy
// as 1, 2, 3" (SC'11), the one cuRAND (curandStatePhilox4_32_10) and JAX use: a pure function from a 128-bit
// counter and a 64-bit key to 128 random bits. There is no state to carry, so any (key, counter) can be drawn in
// any order, on the host or in a kernel, and gives the same bits; distinct counters give independent streams.
// The rounds match Random123's philox4x32 (R = 10) bit for bit; tests/causal_lm.cpp checks its kat_vectors.
#include <cstdint>

#include "ngemb/core/macros.hpp"

namespace ngemb {

/// Four 32-bit words: a Philox counter, or the random block it maps to.
struct philox4x32_block {
  std::uint32_t word[4] = {0, 0, 0, 0};

  friend NGEMB_HD constexpr bool operator==(const philox4x32_block& a, const philox4x32_block& b) {
    return a.word[0] == b.word[0] && a.word[1] == b.word[1] && a.word[2] == b.word[2] && a.word[3] == b.word[3];
  }
};

/// A Philox4x32 key: two 32-bit words.
struct philox4x32_key {
  std::uint32_t word[2] = {0, 0};
};

/// Philox4x32-10 of `counter` under `key` (Random123's philox4x32_R(10, counter, key)).
NGEMB_HD constexpr philox4x32_block philox4x32_10(philox4x32_block counter, philox4x32_key key) {
  constexpr std::uint64_t multiplier0 = 0xD2511F53u;  // PHILOX_M4x32_0
  constexpr std::uint64_t multiplier1 = 0xCD9E8D57u;  // PHILOX_M4x32_1
  constexpr std::uint32_t weyl0 = 0x9E3779B9u;        // PHILOX_W32_0: golden ratio
  constexpr std::uint32_t weyl1 = 0xBB67AE85u;        // PHILOX_W32_1: sqrt(3) - 1
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {  // the key is bumped before every round but the first
      key.word[0] += weyl0;
      key.word[1] += weyl1;
    }
    const std::uint64_t product0 = multiplier0 * counter.word[0];
    const std::uint64_t product1 = multiplier1 * counter.word[2];
    const philox4x32_block next{{static_cast<std::uint32_t>(product1 >> 32) ^ counter.word[1] ^ key.word[0],
                                 static_cast<std::uint32_t>(product1),
                                 static_cast<std::uint32_t>(product0 >> 32) ^ counter.word[3] ^ key.word[1],
                                 static_cast<std::uint32_t>(product0)}};
    counter = next;
  }
  return counter;
}

/// A double in [0, 1) from 53 random bits: the top 53 bits of (high << 32 | low), times 2^-53. Every value is a
/// multiple of 2^-53 and 1 - 2^-53 is the largest, so the result is exact and never reaches 1.
NGEMB_HD constexpr double uniform_from_bits(std::uint32_t high, std::uint32_t low) {
  const std::uint64_t bits = (static_cast<std::uint64_t>(high) << 32) | low;
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

/// The random numbers of one sampled token: Philox4x32-10 under key = seed (low word first), at counter
/// {sequence low word, sequence high word, step, draw}. `sequence` is the caller's index of the sequence (its
/// prompt's index), `step` the token's index in that sequence's output, `draw` counts the draws a step needs
/// (sampling one token takes draw 0). So every (seed, sequence, step, draw) has its own block, whatever else is
/// in the batch and in whatever order it is computed.
struct token_stream {
  std::uint64_t seed = 0;
  std::uint64_t sequence = 0;
  std::uint32_t step = 0;

  /// The 128 random bits of draw `draw`.
  [[nodiscard]] NGEMB_HD constexpr philox4x32_block bits(std::uint32_t draw = 0) const {
    return philox4x32_10(philox4x32_block{{static_cast<std::uint32_t>(sequence),
                                           static_cast<std::uint32_t>(sequence >> 32), step, draw}},
                         philox4x32_key{{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}});
  }
  /// Draw `draw` as a uniform double in [0, 1): uniform_from_bits(word 0, word 1) of bits(draw).
  [[nodiscard]] NGEMB_HD constexpr double uniform(std::uint32_t draw = 0) const {
    const philox4x32_block block = bits(draw);
    return uniform_from_bits(block.word[0], block.word[1]);
  }
};

}  // namespace ngemb
