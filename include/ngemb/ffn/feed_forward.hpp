#pragma once
// The feed_forward part kind: a position-wise FFN y = f(x) over [tokens x H] (dense SwiGLU, a MoE layer, a user's
// own), over its whole life: loaded from a checkpoint under a prefix with a named-field shape, saved under the same
// names, run forward. detail::check_feed_forward<F>() asserts each member on its own, so a type that lacks one is
// rejected with a message naming that member rather than a page of template errors.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/tensor_collection.hpp"

namespace ngemb {

/// The sizes of a dense FFN: H in and out, I inside.
struct ffn_shape {
  std::int64_t hidden;
  std::int64_t intermediate;
};

namespace detail {

template <class F>
concept names_policy_and_shape = requires {
  typename F::policy_type;
  typename F::shape;
};

template <class F>
concept loads_from_checkpoint = names_policy_and_shape<F> &&
    requires(const typename F::policy_type& policy, const checkpoint& source, const std::string& prefix,
             const typename F::shape& dims) {
      { F::load(policy, source, prefix, dims) } -> std::same_as<F>;
    };

template <class F>
concept saves_under_prefix = names_policy_and_shape<F> &&
    requires(const F& part, const typename F::policy_type& policy, const std::string& prefix, tensor_collection& out) {
      part.save(policy, prefix, out);
    };

template <class F>
concept runs_rows_forward = names_policy_and_shape<F> &&
    requires(F& layer, const typename F::policy_type& policy, std::size_t tokens, view<const float> x, view<float> y) {
      layer.forward(policy, tokens, x, y);
    };

}  // namespace detail

/// A position-wise FFN: policy_type, shape, static load(policy, const checkpoint&, prefix, const shape&), save(policy,
/// prefix, tensor_collection&) and forward(policy, tokens, x, y) with x, y [tokens x H] in policy memory.
template <class F>
concept feed_forward = detail::names_policy_and_shape<F> && detail::loads_from_checkpoint<F> &&
                       detail::saves_under_prefix<F> && detail::runs_rows_forward<F>;

namespace detail {

/// One static_assert per member of feed_forward, for the owner (e.g. "decoder block") to call.
template <class F>
constexpr bool check_feed_forward() {
  static_assert(requires { typename F::policy_type; },
                "feed_forward: the FFN type must name its policy (using policy_type = ...)");
  static_assert(requires { typename F::shape; },
                "feed_forward: the FFN type must name its shape (using shape = ngemb::ffn_shape, or its own struct "
                "with a sublayer_shape(const model_config&, std::type_identity<shape>) overload)");
  static_assert(loads_from_checkpoint<F>,
                "feed_forward: the FFN type must have static load(policy, const checkpoint&, prefix, const shape&) "
                "returning it");
  static_assert(saves_under_prefix<F>,
                "feed_forward: the FFN type must have save(policy, prefix, tensor_collection&) const");
  static_assert(runs_rows_forward<F>, "feed_forward: the FFN type must have forward(policy, tokens, x, y)");
  return true;
}

}  // namespace detail

}  // namespace ngemb
