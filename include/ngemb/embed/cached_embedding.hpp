#pragma once
// The `cached_embedding` concept: what a model (causal_lm) needs of its embedding. It runs over the n-gram cache
// (prefill and decode) and has its whole life in a checkpoint: load from a shared checkpoint (a store may keep it
// alive), an owner prefix ("model") and the n-gram config, and save under the same names.
#include <concepts>
#include <cstdint>
#include <memory>
#include <string>

#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/tensor_collection.hpp"

namespace ngemb {

namespace detail {

// One concept per member, so a type that is not a cached embedding fails on a static_assert naming what it lacks.
template <class E>
concept embedding_policy = requires { typename E::policy_type; };
template <class E>
concept embedding_forward = requires(E& embedding, const typename E::policy_type& policy,
                                     ngram_cache<std::int32_t, typename E::policy_type>& cache,
                                     view<const std::int32_t> slots, ragged_view<const std::int32_t> tokens,
                                     view<float> out) { embedding.forward(policy, cache, slots, tokens, out); };
template <class E>
concept embedding_width = requires(const E& embedding) {
  { embedding.output_width() } -> std::convertible_to<std::int64_t>;
};
template <class E>
concept embedding_load = requires(const typename E::policy_type& policy, std::shared_ptr<const checkpoint> source,
                                  const std::string& prefix, const ngram_config& config) {
  { E::load(policy, source, prefix, config) } -> std::same_as<E>;
};
template <class E>
concept embedding_save = requires(const E& embedding, const typename E::policy_type& policy,
                                  const std::string& prefix, tensor_collection& out) {
  embedding.save(policy, prefix, out);
};

}  // namespace detail

template <class E>
concept cached_embedding = detail::embedding_policy<E> && detail::embedding_forward<E> &&
                           detail::embedding_width<E> && detail::embedding_load<E> && detail::embedding_save<E>;

namespace detail {

/// Each missing member of a cached embedding named by its own failure.
template <class E>
constexpr bool check_cached_embedding() {
  static_assert(embedding_policy<E>, "cached_embedding: must have policy_type");
  static_assert(embedding_forward<E>, "cached_embedding: must run over the n-gram cache: forward(policy, "
                                      "ngram_cache<std::int32_t, policy_type>&, slots, tokens, view<float> out)");
  static_assert(embedding_width<E>, "cached_embedding: must have output_width()");
  static_assert(embedding_load<E>, "cached_embedding: must have static load(policy, std::shared_ptr<const "
                                   "checkpoint>, prefix, ngram_config) returning it");
  static_assert(embedding_save<E>, "cached_embedding: must have save(policy, prefix, tensor_collection&)");
  return true;
}

}  // namespace detail

}  // namespace ngemb
