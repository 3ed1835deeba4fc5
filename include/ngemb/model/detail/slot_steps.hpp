#pragma once
// The sequence-slot and step bookkeeping every attention cache shares (kv_cache, latent_cache): which slots are in
// use, how many positions each holds, and the begun step's plan (slot and position of each token, in policy
// memory). The caches add only their memory layout; errors name the owning cache ("kv_cache::begin: ...").
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/core/detail/free_slots.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/detail/kv_layout.hpp"

namespace ngemb::detail {

template <class Policy>
class slot_steps {
 public:
  using slot_id = std::int32_t;

  /// `owner` names the cache in error messages.
  slot_steps(std::string owner, std::size_t max_slots, std::int64_t max_positions)
      : owner_(std::move(owner)), max_positions_(max_positions), lengths_(max_slots, 0), allocated_(max_slots, false) {
    if (max_slots < 1) {
      throw invalid_argument(owner_ + ": max_slots must be >= 1, got " + std::to_string(max_slots));
    }
    if (max_positions < 1) {
      throw invalid_argument(owner_ + ": max_positions must be >= 1, got " + std::to_string(max_positions));
    }
    if (max_slots > static_cast<std::size_t>(std::numeric_limits<slot_id>::max())) {
      throw invalid_argument(owner_ + ": at most 2^31-1 slots, got " + std::to_string(max_slots));
    }
    free_slots_ = free_slots(max_slots);
  }

  slot_id allocate() {
    if (free_slots_.empty()) {
      throw invalid_argument(owner_ + ": all " + std::to_string(max_slots()) + " slots are in use");
    }
    const slot_id slot = free_slots_.take_lowest();
    allocated_[static_cast<std::size_t>(slot)] = true;
    lengths_[static_cast<std::size_t>(slot)] = 0;
    return slot;
  }

  void free(slot_id slot) {
    require_allocated(slot, "free");
    allocated_[static_cast<std::size_t>(slot)] = false;
    free_slots_.give_back(slot);
    discard_step();
  }

  void reset(slot_id slot) { truncate_to(slot, 0, "reset"); }

  void truncate(slot_id slot, std::int64_t length) { truncate_to(slot, length, "truncate"); }

  [[nodiscard]] std::int64_t length(slot_id slot) const {
    require_allocated(slot, "length");
    return lengths_[static_cast<std::size_t>(slot)];
  }

  void begin(const Policy& policy, view<const slot_id> slots, view<const std::int64_t> sizes) {
    discard_step();
    if (slots.size() != sizes.size()) {
      throw shape_mismatch(owner_ + "::begin: " + std::to_string(slots.size()) + " slots but " +
                           std::to_string(sizes.size()) + " sizes");
    }
    std::vector<bool> seen(max_slots(), false);
    for (std::size_t s = 0; s < slots.size(); ++s) {
      require_allocated(slots[s], "begin");
      const auto slot = static_cast<std::size_t>(slots[s]);
      if (seen[slot]) {
        throw invalid_argument(owner_ + "::begin: slot " + std::to_string(slots[s]) + " is listed twice in one step");
      }
      seen[slot] = true;
      if (sizes[s] < 0 || sizes[s] > max_positions_ - lengths_[slot]) {
        throw invalid_argument(owner_ + "::begin: slot " + std::to_string(slots[s]) + " holds " +
                               std::to_string(lengths_[slot]) + " positions and cannot take " +
                               std::to_string(sizes[s]) + " more (max_positions = " + std::to_string(max_positions_) +
                               ")");
      }
    }
    std::vector<token_place>& plan = plan_host_;
    plan.clear();
    for (std::size_t s = 0; s < slots.size(); ++s) {
      const std::int64_t first = lengths_[static_cast<std::size_t>(slots[s])];
      for (std::int64_t i = 0; i < sizes[s]; ++i) {
        plan.push_back({slots[s], first + i});
      }
      if (sizes[s] > 0) {
        step_positions_ = std::max(step_positions_, first + sizes[s]);
      }
    }
    if (plan_.size() < plan.size()) {
      plan_ = typename Policy::template buffer<token_place>(policy, plan.size());
    }
    copy_to(policy, view<const token_place>(plan), plan_.as_view().subview(0, plan.size()));
    step_slots_.assign(slots.begin(), slots.end());
    step_sizes_.assign(sizes.begin(), sizes.end());
    step_tokens_ = plan.size();
    begun_ = true;
  }

  void commit() {
    if (!begun_) {
      throw invalid_argument(owner_ + "::commit: no step is begun");
    }
    for (std::size_t s = 0; s < step_slots_.size(); ++s) {
      lengths_[static_cast<std::size_t>(step_slots_[s])] += step_sizes_[s];
    }
    discard_step();
  }

  [[nodiscard]] std::size_t step_tokens() const { return step_tokens_; }
  [[nodiscard]] bool step_begun() const { return begun_; }
  [[nodiscard]] std::int64_t step_positions() const { return step_positions_; }
  [[nodiscard]] view<const token_place> step_plan() const {
    return view<const token_place>(plan_.data(), step_tokens_);
  }
  /// The begun step's sequences as begin listed them (host arrays): slot and number of new tokens.
  [[nodiscard]] view<const slot_id> step_slots() const { return view<const slot_id>(step_slots_); }
  [[nodiscard]] view<const std::int64_t> step_sizes() const { return view<const std::int64_t>(step_sizes_); }

  [[nodiscard]] std::size_t max_slots() const { return lengths_.size(); }
  [[nodiscard]] std::int64_t max_positions() const { return max_positions_; }
  [[nodiscard]] std::size_t free_slot_count() const { return free_slots_.size(); }

 private:
  void require_allocated(slot_id slot, const char* operation) const {
    const bool known = slot >= 0 && static_cast<std::size_t>(slot) < allocated_.size();
    if (!known || !allocated_[static_cast<std::size_t>(slot)]) {
      throw invalid_argument(owner_ + "::" + operation + ": slot " + std::to_string(slot) +
                             " is not an allocated slot (the cache has " + std::to_string(max_slots()) + " slots)");
    }
  }

  void truncate_to(slot_id slot, std::int64_t length, const char* operation) {
    require_allocated(slot, operation);
    std::int64_t& current = lengths_[static_cast<std::size_t>(slot)];
    if (length < 0 || length > current) {
      throw invalid_argument(owner_ + "::" + operation + ": slot " + std::to_string(slot) + " holds " +
                             std::to_string(current) + " positions, cannot keep " + std::to_string(length));
    }
    current = length;  // the dropped positions are overwritten by the next tokens; they are never read before
    discard_step();
  }

  void discard_step() {
    begun_ = false;
    step_tokens_ = 0;
    step_positions_ = 0;
    step_slots_.clear();
    step_sizes_.clear();
  }

  std::string owner_;
  std::int64_t max_positions_;
  typename Policy::template buffer<token_place> plan_;
  // The plan's host copy outlives begin, as copy_to asks of a stream-ordered source (CUDA stages a pageable
  // source before cudaMemcpyAsync returns, so the next begin may rewrite it).
  std::vector<token_place> plan_host_;
  std::vector<std::int64_t> lengths_;
  std::vector<bool> allocated_;
  free_slots free_slots_;
  std::vector<slot_id> step_slots_;
  std::vector<std::int64_t> step_sizes_;
  std::size_t step_tokens_ = 0;
  std::int64_t step_positions_ = 0;
  bool begun_ = false;
};

}  // namespace ngemb::detail
