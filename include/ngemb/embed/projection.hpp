#pragma once
// The `projection` concept: the W_i that map each token's T gathered sub-table rows (T*d values) to the output
// width, in one call, and their whole life in a checkpoint.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/gemm.hpp"

namespace ngemb {

/// What a projection is built for: T sub-tables of rows of width d, projected to `output_width` values.
struct projection_shape {
  int num_tables = 0;
  std::int64_t row_width = 0;
  std::int64_t output_width = 0;
};

namespace detail {

// One concept per member, so a type that is not a projection fails on a static_assert naming what it lacks.
template <class P>
concept projection_types = requires {
  typename P::policy_type;
  typename P::accumulator;
} && gemm_scalar<typename P::accumulator>;
template <class P>
concept projection_sizes = requires(const P& p) {
  { p.num_tables() } -> std::convertible_to<int>;
  { p.row_width() } -> std::convertible_to<std::int64_t>;
  { p.input_width() } -> std::convertible_to<std::int64_t>;
  { p.output_width() } -> std::convertible_to<std::int64_t>;
};
template <class P>
concept projection_project = requires(const P& p, const typename P::policy_type& policy, std::size_t tokens,
                                      view<const typename P::accumulator> in, view<typename P::accumulator> out) {
  p.project(policy, tokens, in, out);
};
template <class P>
concept projection_shape_type =
    requires { typename P::shape; } && std::constructible_from<typename P::shape, const projection_shape&>;
template <class P>
concept projection_load = requires(const typename P::policy_type& policy, const checkpoint& source,
                                   const std::string& prefix, const typename P::shape& dims) {
  { P::load(policy, source, prefix, dims) } -> std::same_as<P>;
};
template <class P>
concept projection_save = requires(const P& p, const typename P::policy_type& policy, const std::string& prefix,
                                   tensor_collection& out) { p.save(policy, prefix, out); };

}  // namespace detail

/// What ngram_embedding needs of a projection: T row blocks of width d in, `output_width` values out, one call;
/// load(policy, source, prefix, shape) with prefix the n-gram module (`ngram_names::module(owner)`) and a shape
/// built from projection_shape, and save(policy, prefix, out) under the same names.
template <class P>
concept projection = detail::projection_types<P> && detail::projection_sizes<P> && detail::projection_project<P> &&
                     detail::projection_shape_type<P> && detail::projection_load<P> && detail::projection_save<P>;

namespace detail {

/// Each missing member of a projection named by its own failure.
template <class P>
constexpr bool check_projection() {
  static_assert(projection_types<P>, "projection: must have policy_type and accumulator (float or double)");
  static_assert(projection_sizes<P>, "projection: must have num_tables(), row_width(), input_width(), output_width()");
  static_assert(projection_project<P>, "projection: must have project(policy, tokens, in, out)");
  static_assert(projection_shape_type<P>, "projection: must have a shape type constructible from projection_shape");
  static_assert(projection_load<P>,
                "projection: must have static load(policy, checkpoint, prefix, shape) returning it");
  static_assert(projection_save<P>, "projection: must have save(policy, prefix, tensor_collection&)");
  return true;
}

}  // namespace detail

}  // namespace ngemb
