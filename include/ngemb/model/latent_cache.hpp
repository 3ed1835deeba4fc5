#pragma once
// The cache of a model's MLA sublayers (model/mla_attention.hpp): per sequence slot, position and layer only the
// compressed latent, kv_lora_rank values of the normed (and LoRA-scaled) c_kv and qk_rope_head_dim values of the
// rotated shared k_rope, in fp32 or bf16: for LongCat-Flash-Lite 512 + 64 values, where a GQA cache of its 32
// heads would keep 32 x (192 + 128). Slots and steps work exactly as kv_cache's (the same detail::slot_steps):
//   cache.begin(policy, slots, sizes);  for each layer: attention.forward(policy, cache, layer, x, out);
//   cache.commit();                      cache.truncate(slot, accepted_length);   // speculative rollback
// Memory: [layers][slots][max_positions][kv_lora_rank + rope_dim] Element, allocated up front.
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "ngemb/core/checked.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/attention_layer.hpp"
#include "ngemb/model/detail/kv_layout.hpp"
#include "ngemb/model/detail/mla_ops.hpp"
#include "ngemb/model/detail/slot_steps.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

template <class Policy = host_policy, class Element = float>
class latent_cache {
  static_assert(std::is_same_v<Element, float> || std::is_same_v<Element, bf16>,
                "latent_cache: the element type must be float or ngemb::bf16");

 public:
  using policy_type = Policy;
  using slot_id = std::int32_t;
  using element_type = Element;

  latent_cache(const Policy& policy, int attention_layers, int kv_lora_rank, int rope_dim, std::size_t max_slots,
               std::int64_t max_positions)
      : layers_(attention_layers),
        kv_lora_rank_(kv_lora_rank),
        rope_dim_(rope_dim),
        steps_("latent_cache", max_slots, max_positions) {
    const auto fail = [](const std::string& what, long long value) {
      throw invalid_argument("latent_cache: " + what + " must be >= 1, got " + std::to_string(value));
    };
    if (attention_layers < 1) {
      fail("attention_layers", attention_layers);
    }
    if (kv_lora_rank < 1) {
      fail("kv_lora_rank", kv_lora_rank);
    }
    if (rope_dim < 1) {
      fail("rope_dim", rope_dim);
    }
    const std::size_t elements =
        checked_product("latent_cache: layers x slots x max_positions x (kv_lora_rank + rope_dim)", attention_layers,
                        max_slots, max_positions, kv_lora_rank + rope_dim);
    try {
      values_ = typename Policy::template buffer<Element>(policy, elements);
    } catch (const out_of_memory& failure) {
      throw out_of_memory("latent_cache: " + std::to_string(attention_layers) + " attention layers x " +
                          std::to_string(max_slots) + " sequences x " + std::to_string(max_positions) +
                          " positions x " + std::to_string(values_per_token()) +
                          " values do not fit in memory; lower max_sequences or max_positions (" + failure.what() +
                          ")");
    }
  }

  /// Takes a free slot (lowest first), empty. Throws invalid_argument when all are in use.
  slot_id allocate() { return steps_.allocate(); }
  /// Returns a slot to the free list. Like reset and truncate, it discards a begun step that was not committed.
  void free(slot_id slot) { steps_.free(slot); }
  /// Forgets every position of a slot.
  void reset(slot_id slot) { steps_.reset(slot); }
  [[nodiscard]] std::int64_t length(slot_id slot) const { return steps_.length(slot); }
  /// Speculative rollback: drops the positions >= `length` of a slot.
  void truncate(slot_id slot, std::int64_t length) { steps_.truncate(slot, length); }
  /// Plans one forward step, as kv_cache::begin (the same checks and errors).
  void begin(const Policy& policy, view<const slot_id> slots, view<const std::int64_t> sizes) {
    steps_.begin(policy, slots, sizes);
  }
  /// Ends the begun step: each of its slots' lengths grows by its size.
  void commit() { steps_.commit(); }

  [[nodiscard]] std::size_t step_tokens() const { return steps_.step_tokens(); }
  [[nodiscard]] bool step_begun() const { return steps_.step_begun(); }
  [[nodiscard]] std::int64_t step_positions() const { return steps_.step_positions(); }
  [[nodiscard]] view<const detail::token_place> step_plan() const { return steps_.step_plan(); }
  /// The begun step's slots and sizes as begin listed them (host arrays).
  [[nodiscard]] view<const slot_id> step_slots() const { return steps_.step_slots(); }
  [[nodiscard]] view<const std::int64_t> step_sizes() const { return steps_.step_sizes(); }

  /// Latent memory, for the MLA layers.
  [[nodiscard]] detail::latent_storage<Element> storage() {
    return {values_.data(), max_slots(), max_positions(), values_per_token()};
  }

  /// Values one token keeps per attention layer: kv_lora_rank + rope_dim.
  [[nodiscard]] int values_per_token() const { return kv_lora_rank_ + rope_dim_; }
  /// Bytes one token keeps per attention layer.
  [[nodiscard]] std::size_t bytes_per_token() const {
    return static_cast<std::size_t>(values_per_token()) * sizeof(Element);
  }
  /// Every stored value: layers x slots x max_positions x values_per_token.
  [[nodiscard]] std::size_t stored_values() const { return values_.size(); }

  /// One stored row (layer, slot, position < length(slot)) widened to fp32 on the host: c_kv, then k_rope.
  [[nodiscard]] std::vector<float> token_values(const Policy& policy, int layer, slot_id slot,
                                                std::int64_t position) const {
    if (layer < 0 || layer >= layers_ || position < 0 || position >= length(slot)) {
      throw invalid_argument("latent_cache::token_values: layer " + std::to_string(layer) + ", position " +
                             std::to_string(position) + " is outside the " + std::to_string(layers_) +
                             " layers and the slot's " + std::to_string(length(slot)) + " positions");
    }
    const detail::latent_storage<const Element> layout{values_.data(), max_slots(), max_positions(),
                                                       values_per_token()};
    std::vector<Element> row(static_cast<std::size_t>(values_per_token()));
    copy_to_host(policy,
                 view<const Element>(values_.data() + layout.offset(layer, slot, position), row.size()),
                 view<Element>(row));
    synchronize(policy);
    std::vector<float> widened;
    for (const Element value : row) {
      widened.push_back(static_cast<float>(value));
    }
    return widened;
  }

  [[nodiscard]] int attention_layers() const { return layers_; }
  [[nodiscard]] int kv_lora_rank() const { return kv_lora_rank_; }
  [[nodiscard]] int rope_dim() const { return rope_dim_; }
  [[nodiscard]] std::size_t max_slots() const { return steps_.max_slots(); }
  [[nodiscard]] std::int64_t max_positions() const { return steps_.max_positions(); }
  [[nodiscard]] std::size_t free_slot_count() const { return steps_.free_slot_count(); }

 private:
  int layers_;
  int kv_lora_rank_;
  int rope_dim_;
  detail::slot_steps<Policy> steps_;
  typename Policy::template buffer<Element> values_;
};

static_assert(attention_cache<latent_cache<>>);

}  // namespace ngemb
