#pragma once
// The benchmarks' input and its byte count, shared by the host and the device programs so both hash the same tokens.
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/views.hpp"

namespace ngemb_bench {

using token_type = std::int32_t;  // the n-gram cache's default token type, as engines pass them
using id_type = std::uint32_t;    // Lite's moduli are < 2^32, so 32-bit ids halve the output traffic

/// Tokens read plus ids written: the traffic the hash cannot avoid (cached look-back and offsets are extra).
inline std::size_t bytes_per_token(int num_tables) {
  return sizeof(token_type) + static_cast<std::size_t>(num_tables) * sizeof(id_type);
}

/// A ragged batch on the host; `context` holds each sequence's already committed tokens (oldest first).
struct batch {
  std::vector<token_type> tokens;
  std::vector<std::int64_t> offsets{0};
  std::vector<token_type> context;
  std::vector<std::int64_t> context_offsets{0};

  [[nodiscard]] ngemb::ragged_view<const token_type> token_view() const { return {tokens, offsets}; }
  [[nodiscard]] ngemb::ragged_view<const token_type> context_view() const { return {context, context_offsets}; }
};

/// Random tokens from a fixed seed with ~3% EOS. The other tokens come from [eos+1, V): so EOS occurs only at the
/// intended rate, and 0 (which is also the look-back padding value) never occurs, so no id is trivially zero.
inline batch random_batch(const ngemb::ngram_config& config, std::size_t sequences, std::size_t length,
                          std::size_t context_length, unsigned seed) {
  std::mt19937 random(seed);
  const auto eos = static_cast<token_type>(config.eos_token.value_or(2));
  std::uniform_int_distribution<token_type> ordinary(eos + 1, static_cast<token_type>(config.vocab_size - 1));
  std::bernoulli_distribution is_eos(0.03);
  const auto draw = [&] { return is_eos(random) ? eos : ordinary(random); };
  batch input;
  for (std::size_t s = 0; s < sequences; ++s) {
    for (std::size_t i = 0; i < context_length; ++i) {
      input.context.push_back(draw());
    }
    for (std::size_t i = 0; i < length; ++i) {
      input.tokens.push_back(draw());
    }
    input.context_offsets.push_back(static_cast<std::int64_t>(input.context.size()));
    input.offsets.push_back(static_cast<std::int64_t>(input.tokens.size()));
  }
  return input;
}

}  // namespace ngemb_bench
