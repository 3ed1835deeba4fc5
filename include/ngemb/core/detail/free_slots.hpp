#pragma once
// The free slots of a per-sequence cache (the n-gram cache, the KV cache), handed out lowest first so a cache's
// used slots stay packed at its start whatever order requests end in.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace ngemb::detail {

class free_slots {
 public:
  free_slots() = default;
  /// Slots 0 .. count-1, all free. Ascending order is already a valid min-heap.
  explicit free_slots(std::size_t count) {
    slots_.reserve(count);
    for (std::size_t slot = 0; slot < count; ++slot) {
      slots_.push_back(static_cast<std::int32_t>(slot));
    }
  }

  [[nodiscard]] bool empty() const { return slots_.empty(); }
  [[nodiscard]] std::size_t size() const { return slots_.size(); }

  /// The lowest free slot, taken; the caller checks empty() first.
  std::int32_t take_lowest() {
    std::pop_heap(slots_.begin(), slots_.end(), std::greater<>{});
    const std::int32_t slot = slots_.back();
    slots_.pop_back();
    return slot;
  }

  void give_back(std::int32_t slot) {
    slots_.push_back(slot);
    std::push_heap(slots_.begin(), slots_.end(), std::greater<>{});
  }

 private:
  std::vector<std::int32_t> slots_;  // a min-heap
};

}  // namespace ngemb::detail
