#pragma once
// The KV cache's memory layout and a step's plan, shared by the cache (host bookkeeping) and the attention element
// operations (host loop or device kernel).
#include <cstddef>
#include <cstdint>

#include "ngemb/core/macros.hpp"

namespace ngemb::detail {

/// Where one token of a step sits: its sequence's cache slot and its position in that sequence.
struct token_place {
  std::int32_t slot;
  std::int64_t position;
};

/// K and V, each [layers][slots][kv_heads][max_positions][head_dim] fp32: the positions of one kv head are
/// contiguous, so attention over a sequence's cache streams its rows.
struct kv_storage {
  float* keys;
  float* values;
  std::size_t slots;
  std::int64_t max_positions;
  int kv_heads;
  int head_dim;

  /// First element of the head vector of (layer, slot, position, kv_head) in keys and in values.
  NGEMB_HD std::size_t offset(int layer, std::int32_t slot, std::int64_t position, int kv_head) const {
    const std::size_t sequence = static_cast<std::size_t>(layer) * slots + static_cast<std::size_t>(slot);
    const std::size_t head = sequence * static_cast<std::size_t>(kv_heads) + static_cast<std::size_t>(kv_head);
    return (head * static_cast<std::size_t>(max_positions) + static_cast<std::size_t>(position)) *
           static_cast<std::size_t>(head_dim);
  }
  /// Elements from a head vector to the same head's at the next position.
  [[nodiscard]] NGEMB_HD std::size_t position_stride() const { return static_cast<std::size_t>(head_dim); }
};

}  // namespace ngemb::detail
