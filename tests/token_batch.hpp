#pragma once
// A ragged batch of host token sequences (and optional per-sequence context), built one sequence at a time.
#include <cstdint>
#include <vector>

#include "ngemb/core/views.hpp"

namespace ngemb_test {

struct token_batch {
  std::vector<std::int32_t> tokens;
  std::vector<std::int64_t> offsets{0};
  std::vector<std::int32_t> context;
  std::vector<std::int64_t> context_offsets{0};

  void add(const std::vector<std::int32_t>& sequence, const std::vector<std::int32_t>& earlier = {}) {
    tokens.insert(tokens.end(), sequence.begin(), sequence.end());
    offsets.push_back(static_cast<std::int64_t>(tokens.size()));
    context.insert(context.end(), earlier.begin(), earlier.end());
    context_offsets.push_back(static_cast<std::int64_t>(context.size()));
  }
  [[nodiscard]] ngemb::ragged_view<const std::int32_t> token_view() const { return {tokens, offsets}; }
  [[nodiscard]] ngemb::ragged_view<const std::int32_t> context_view() const { return {context, context_offsets}; }
};

}  // namespace ngemb_test
