#pragma once
// The KV cache of a model's attention sublayers: per sequence slot, the rotated keys and the values of every
// position so far, for every attention layer. A forward step over a ragged batch is planned once (begin), used by
// every attention layer (which writes its K/V of the step's tokens and attends over them), then committed:
//   cache.begin(policy, slots, sizes);  for each layer: attention.forward(policy, cache, layer, x, out);
//   cache.commit();                      cache.truncate(slot, accepted_length);   // speculative rollback
// Memory: K and V each [layers][slots][max_positions][kv_heads][head_dim] fp32, allocated up front.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "ngemb/core/checked.hpp"
#include "ngemb/core/detail/free_slots.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/attention_layer.hpp"
#include "ngemb/model/detail/kv_layout.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

template <class Policy = host_policy>
class kv_cache {
 public:
  using policy_type = Policy;
  using slot_id = std::int32_t;

  kv_cache(const Policy& policy, int attention_layers, int kv_heads, int head_dim, std::size_t max_slots,
           std::int64_t max_positions)
      : layers_(attention_layers),
        kv_heads_(kv_heads),
        head_dim_(head_dim),
        max_positions_(max_positions),
        lengths_(max_slots, 0),
        allocated_(max_slots, false) {
    const auto fail = [](const std::string& what, long long value) {
      throw invalid_argument("kv_cache: " + what + " must be >= 1, got " + std::to_string(value));
    };
    if (attention_layers < 1) {
      fail("attention_layers", attention_layers);
    }
    if (kv_heads < 1) {
      fail("kv_heads", kv_heads);
    }
    if (head_dim < 1) {
      fail("head_dim", head_dim);
    }
    if (max_slots < 1) {
      fail("max_slots", static_cast<long long>(max_slots));
    }
    if (max_positions < 1) {
      fail("max_positions", max_positions);
    }
    if (max_slots > static_cast<std::size_t>(std::numeric_limits<slot_id>::max())) {
      throw invalid_argument("kv_cache: at most 2^31-1 slots, got " + std::to_string(max_slots));
    }
    const std::size_t elements =
        checked_product("kv_cache: layers x slots x max_positions x kv_heads x head_dim", attention_layers, max_slots,
                        max_positions, kv_heads, head_dim);
    try {
      keys_ = typename Policy::template buffer<float>(policy, elements);
      values_ = typename Policy::template buffer<float>(policy, elements);
    } catch (const out_of_memory& failure) {
      throw out_of_memory("kv_cache: K and V for " + std::to_string(attention_layers) + " attention layers x " +
                          std::to_string(max_slots) + " sequences x " + std::to_string(max_positions) +
                          " positions x " + std::to_string(kv_heads) + " kv heads x " + std::to_string(head_dim) +
                          " do not fit in memory; lower max_sequences or max_positions (" + failure.what() + ")");
    }
    free_slots_ = detail::free_slots(max_slots);
  }

  /// Takes a free slot (lowest first), empty. Throws invalid_argument when all are in use.
  slot_id allocate() {
    if (free_slots_.empty()) {
      throw invalid_argument("kv_cache: all " + std::to_string(max_slots()) + " slots are in use");
    }
    const slot_id slot = free_slots_.take_lowest();
    allocated_[static_cast<std::size_t>(slot)] = true;
    lengths_[static_cast<std::size_t>(slot)] = 0;
    return slot;
  }

  /// Returns a slot to the free list. Like reset and truncate, it discards a begun step that was not committed.
  void free(slot_id slot) {
    require_allocated(slot, "free");
    allocated_[static_cast<std::size_t>(slot)] = false;
    free_slots_.give_back(slot);
    discard_step();
  }

  /// Forgets every position of a slot (a new sequence starts in it).
  void reset(slot_id slot) { truncate_to(slot, 0, "reset"); }

  [[nodiscard]] std::int64_t length(slot_id slot) const {
    require_allocated(slot, "length");
    return lengths_[static_cast<std::size_t>(slot)];
  }

  /// Speculative rollback: drops the positions >= `length` of a slot. Throws invalid_argument when `length` is
  /// negative or beyond the slot's current length.
  void truncate(slot_id slot, std::int64_t length) { truncate_to(slot, length, "truncate"); }

  /// Plans one forward step: sequence s appends sizes[s] tokens to slot slots[s] (host arrays); token i of
  /// sequence s sits at position length(slots[s]) + i, and the step's tokens are ordered sequence by sequence.
  /// Replaces a begun step that was not committed. Throws shape_mismatch when the arrays differ in size and
  /// invalid_argument for an unknown or repeated slot, a negative size, or a slot that would exceed max_positions.
  void begin(const Policy& policy, view<const slot_id> slots, view<const std::int64_t> sizes) {
    discard_step();
    if (slots.size() != sizes.size()) {
      throw shape_mismatch("kv_cache::begin: " + std::to_string(slots.size()) + " slots but " +
                           std::to_string(sizes.size()) + " sizes");
    }
    std::vector<bool> seen(max_slots(), false);
    for (std::size_t s = 0; s < slots.size(); ++s) {
      require_allocated(slots[s], "begin");
      const auto slot = static_cast<std::size_t>(slots[s]);
      if (seen[slot]) {
        throw invalid_argument("kv_cache::begin: slot " + std::to_string(slots[s]) + " is listed twice in one step");
      }
      seen[slot] = true;
      if (sizes[s] < 0 || sizes[s] > max_positions_ - lengths_[slot]) {
        throw invalid_argument("kv_cache::begin: slot " + std::to_string(slots[s]) + " holds " +
                               std::to_string(lengths_[slot]) + " positions and cannot take " +
                               std::to_string(sizes[s]) + " more (max_positions = " +
                               std::to_string(max_positions_) + ")");
      }
    }
    std::vector<detail::token_place>& plan = plan_host_;
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
      plan_ = typename Policy::template buffer<detail::token_place>(policy, plan.size());
    }
    copy_to(policy, view<const detail::token_place>(plan), plan_.as_view().subview(0, plan.size()));
    step_slots_.assign(slots.begin(), slots.end());
    step_sizes_.assign(sizes.begin(), sizes.end());
    step_tokens_ = plan.size();
    begun_ = true;
  }

  /// Ends the begun step: each of its slots' lengths grows by its size. Throws invalid_argument when no step is
  /// begun.
  void commit() {
    if (!begun_) {
      throw invalid_argument("kv_cache::commit: no step is begun");
    }
    for (std::size_t s = 0; s < step_slots_.size(); ++s) {
      lengths_[static_cast<std::size_t>(step_slots_[s])] += step_sizes_[s];
    }
    discard_step();
  }

  /// Tokens of the begun step (0 when none is begun).
  [[nodiscard]] std::size_t step_tokens() const { return step_tokens_; }
  [[nodiscard]] bool step_begun() const { return begun_; }
  /// Largest position + 1 over the begun step's tokens: the longest context one of them attends over.
  [[nodiscard]] std::int64_t step_positions() const { return step_positions_; }
  /// Slot and position of each token of the begun step, in policy memory.
  [[nodiscard]] view<const detail::token_place> step_plan() const {
    return view<const detail::token_place>(plan_.data(), step_tokens_);
  }
  /// K/V memory, for the attention layers.
  [[nodiscard]] detail::kv_storage storage() {
    return {keys_.data(), values_.data(), max_slots(), max_positions_, kv_heads_, head_dim_};
  }

  [[nodiscard]] int attention_layers() const { return layers_; }
  [[nodiscard]] int kv_heads() const { return kv_heads_; }
  [[nodiscard]] int head_dim() const { return head_dim_; }
  [[nodiscard]] std::size_t max_slots() const { return lengths_.size(); }
  [[nodiscard]] std::int64_t max_positions() const { return max_positions_; }
  [[nodiscard]] std::size_t free_slot_count() const { return free_slots_.size(); }

 private:
  void require_allocated(slot_id slot, const char* operation) const {
    const bool known = slot >= 0 && static_cast<std::size_t>(slot) < allocated_.size();
    if (!known || !allocated_[static_cast<std::size_t>(slot)]) {
      throw invalid_argument(std::string("kv_cache::") + operation + ": slot " + std::to_string(slot) +
                             " is not an allocated slot (the cache has " + std::to_string(max_slots()) + " slots)");
    }
  }

  void truncate_to(slot_id slot, std::int64_t length, const char* operation) {
    require_allocated(slot, operation);
    std::int64_t& current = lengths_[static_cast<std::size_t>(slot)];
    if (length < 0 || length > current) {
      throw invalid_argument(std::string("kv_cache::") + operation + ": slot " + std::to_string(slot) + " holds " +
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

  int layers_;
  int kv_heads_;
  int head_dim_;
  std::int64_t max_positions_;
  typename Policy::template buffer<float> keys_;
  typename Policy::template buffer<float> values_;
  typename Policy::template buffer<detail::token_place> plan_;
  // The plan's host copy outlives begin, as copy_to asks of a stream-ordered source (CUDA stages a pageable
  // source before cudaMemcpyAsync returns, so the next begin may rewrite it).
  std::vector<detail::token_place> plan_host_;
  std::vector<std::int64_t> lengths_;
  std::vector<bool> allocated_;
  detail::free_slots free_slots_;
  std::vector<slot_id> step_slots_;
  std::vector<std::int64_t> step_sizes_;
  std::size_t step_tokens_ = 0;
  std::int64_t step_positions_ = 0;
  bool begun_ = false;
};

static_assert(attention_cache<kv_cache<>>);

}  // namespace ngemb
