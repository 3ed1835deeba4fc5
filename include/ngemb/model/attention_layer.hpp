#pragma once
// The attention_layer part kind and the cache it owns. An attention type names its cache type and makes it, so a
// layout other than GQA's K/V (MLA's compressed latent cache) plugs in without the model knowing it: causal_lm
// holds `typename Block::attention_type::cache_type`, made by the attention's make_cache, and drives it through
// the attention_cache members (sequence slots, and one planned step per forward). detail::check_attention_layer<A>()
// asserts each member on its own, so a type that lacks one is rejected with a message naming it.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/tensor_collection.hpp"

namespace ngemb {

/// Per-sequence attention state over slots: allocate/free/reset a slot, its length, truncate (speculative
/// rollback), and one step at a time: begin(policy, slots, sizes) plans which tokens the step appends where, every
/// attention layer runs over it, commit() makes it part of the slots' lengths.
template <class C>
concept attention_cache = requires {
  typename C::policy_type;
  typename C::slot_id;
} && requires(C& cache, const C& constant, const typename C::policy_type& policy, typename C::slot_id slot,
              std::int64_t length, view<const typename C::slot_id> slots, view<const std::int64_t> sizes) {
  { cache.allocate() } -> std::same_as<typename C::slot_id>;
  cache.free(slot);
  cache.reset(slot);
  cache.truncate(slot, length);
  { constant.length(slot) } -> std::convertible_to<std::int64_t>;
  cache.begin(policy, slots, sizes);
  cache.commit();
  { constant.step_tokens() } -> std::convertible_to<std::size_t>;
  { constant.step_begun() } -> std::convertible_to<bool>;
};

namespace detail {

template <class A>
concept names_attention_types = requires {
  typename A::policy_type;
  typename A::shape;
  typename A::cache_type;
};

template <class A>
concept makes_attention_cache = names_attention_types<A> &&
    requires(const typename A::policy_type& policy, const typename A::shape& dims, int layers,
             std::size_t max_sequences, std::int64_t max_positions) {
      { A::make_cache(policy, dims, layers, max_sequences, max_positions) } -> std::same_as<typename A::cache_type>;
    };

template <class A>
concept loads_attention = names_attention_types<A> &&
    requires(const typename A::policy_type& policy, const checkpoint& source, const std::string& prefix,
             const typename A::shape& dims) {
      { A::load(policy, source, prefix, dims) } -> std::same_as<A>;
    };

template <class A>
concept saves_attention = names_attention_types<A> &&
    requires(const A& layer, const typename A::policy_type& policy, const std::string& prefix, tensor_collection& out) {
      layer.save(policy, prefix, out);
    };

template <class A>
concept runs_attention = names_attention_types<A> &&
    requires(A& layer, const typename A::policy_type& policy, typename A::cache_type& cache, int cache_layer,
             view<const float> x, view<float> out) { layer.forward(policy, cache, cache_layer, x, out); };

}  // namespace detail

/// A self-attention sublayer over the cache it owns: policy_type, shape, cache_type (an attention_cache), static
/// make_cache(policy, shape, attention_layers, max_sequences, max_positions), static load(policy, const checkpoint&,
/// prefix, const shape&), save(policy, prefix, tensor_collection&) and forward(policy, cache&, cache_layer, x, out)
/// over the cache's begun step.
template <class A>
concept attention_layer = detail::names_attention_types<A> && attention_cache<typename A::cache_type> &&
                          detail::makes_attention_cache<A> && detail::loads_attention<A> &&
                          detail::saves_attention<A> && detail::runs_attention<A>;

namespace detail {

/// One static_assert per member of attention_layer, for the owner (e.g. "decoder block") to call.
template <class A>
constexpr bool check_attention_layer() {
  static_assert(requires { typename A::policy_type; },
                "attention_layer: the attention type must name its policy (using policy_type = ...)");
  static_assert(requires { typename A::shape; },
                "attention_layer: the attention type must name its shape (using shape = ..., with a "
                "sublayer_shape(const model_config&, std::type_identity<shape>) overload)");
  static_assert(requires { typename A::cache_type; },
                "attention_layer: the attention type must name the cache it owns (using cache_type = ...)");
  if constexpr (requires { typename A::cache_type; }) {
    static_assert(attention_cache<typename A::cache_type>,
                  "attention_layer: cache_type must model ngemb::attention_cache (allocate, free, reset, truncate, "
                  "length, begin, commit, step_tokens, step_begun)");
  }
  static_assert(makes_attention_cache<A>,
                "attention_layer: the attention type must have static make_cache(policy, const shape&, "
                "attention_layers, max_sequences, max_positions) returning its cache_type");
  static_assert(loads_attention<A>,
                "attention_layer: the attention type must have static load(policy, const checkpoint&, prefix, "
                "const shape&) returning it");
  static_assert(saves_attention<A>,
                "attention_layer: the attention type must have save(policy, prefix, tensor_collection&) const");
  static_assert(runs_attention<A>,
                "attention_layer: the attention type must have forward(policy, cache_type&, cache_layer, x, out)");
  return true;
}

}  // namespace detail

}  // namespace ngemb
