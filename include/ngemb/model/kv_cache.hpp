#pragma once
// The KV cache of a model's attention sublayers: per sequence slot, the rotated keys and the values of every
// position so far, for every attention layer. A forward step over a ragged batch is planned once (begin), used by
// every attention layer (which writes its K/V of the step's tokens and attends over them), then committed:
//   cache.begin(policy, slots, sizes);  for each layer: attention.forward(policy, cache, layer, x, out);
//   cache.commit();                      cache.truncate(slot, accepted_length);   // speculative rollback
// Memory: K and V each [layers][slots][kv_heads][max_positions][head_dim] fp32, allocated up front.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/checked.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/attention_layer.hpp"
#include "ngemb/model/detail/kv_layout.hpp"
#include "ngemb/model/detail/slot_steps.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

template <class Policy = host_policy>
class kv_cache {
 public:
  using policy_type = Policy;
  using slot_id = std::int32_t;

  kv_cache(const Policy& policy, int attention_layers, int kv_heads, int head_dim, std::size_t max_slots,
           std::int64_t max_positions)
      : layers_(attention_layers), kv_heads_(kv_heads), head_dim_(head_dim), steps_("kv_cache", max_slots, max_positions) {
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
  }

  /// Takes a free slot (lowest first), empty. Throws invalid_argument when all are in use.
  slot_id allocate() { return steps_.allocate(); }

  /// Returns a slot to the free list. Like reset and truncate, it discards a begun step that was not committed.
  void free(slot_id slot) { steps_.free(slot); }

  /// Forgets every position of a slot (a new sequence starts in it).
  void reset(slot_id slot) { steps_.reset(slot); }

  [[nodiscard]] std::int64_t length(slot_id slot) const { return steps_.length(slot); }

  /// Speculative rollback: drops the positions >= `length` of a slot. Throws invalid_argument when `length` is
  /// negative or beyond the slot's current length.
  void truncate(slot_id slot, std::int64_t length) { steps_.truncate(slot, length); }

  /// Plans one forward step: sequence s appends sizes[s] tokens to slot slots[s] (host arrays); token i of
  /// sequence s sits at position length(slots[s]) + i, and the step's tokens are ordered sequence by sequence.
  /// Replaces a begun step that was not committed. Throws shape_mismatch when the arrays differ in size and
  /// invalid_argument for an unknown or repeated slot, a negative size, or a slot that would exceed max_positions.
  void begin(const Policy& policy, view<const slot_id> slots, view<const std::int64_t> sizes) {
    steps_.begin(policy, slots, sizes);
  }

  /// Ends the begun step: each of its slots' lengths grows by its size. Throws invalid_argument when no step is
  /// begun.
  void commit() { steps_.commit(); }

  /// Tokens of the begun step (0 when none is begun).
  [[nodiscard]] std::size_t step_tokens() const { return steps_.step_tokens(); }
  [[nodiscard]] bool step_begun() const { return steps_.step_begun(); }
  /// Largest position + 1 over the begun step's tokens: the longest context one of them attends over.
  [[nodiscard]] std::int64_t step_positions() const { return steps_.step_positions(); }
  /// Slot and position of each token of the begun step, in policy memory.
  [[nodiscard]] view<const detail::token_place> step_plan() const { return steps_.step_plan(); }
  /// K/V memory, for the attention layers.
  [[nodiscard]] detail::kv_storage storage() {
    return {keys_.data(), values_.data(), max_slots(), max_positions(), kv_heads_, head_dim_};
  }

  [[nodiscard]] int attention_layers() const { return layers_; }
  [[nodiscard]] int kv_heads() const { return kv_heads_; }
  [[nodiscard]] int head_dim() const { return head_dim_; }
  [[nodiscard]] std::size_t max_slots() const { return steps_.max_slots(); }
  [[nodiscard]] std::int64_t max_positions() const { return steps_.max_positions(); }
  [[nodiscard]] std::size_t free_slot_count() const { return steps_.free_slot_count(); }

 private:
  int layers_;
  int kv_heads_;
  int head_dim_;
  detail::slot_steps<Policy> steps_;
  typename Policy::template buffer<float> keys_;
  typename Policy::template buffer<float> values_;
};

static_assert(attention_cache<kv_cache<>>);

}  // namespace ngemb
