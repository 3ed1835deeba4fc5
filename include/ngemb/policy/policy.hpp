#pragma once
// The execution_policy concept: every expression ngemb's parts and kernels ask of a policy, and nothing more.
// host_policy (asserted below) and device_policy (device_policy.cuh) model it; tests/serial_policy.hpp is a third,
// minimal policy that proves the list complete by running the library under it. A policy's free functions are found
// by argument-dependent lookup: a user policy declares them in its own namespace, and generic code calls them
// unqualified (ngemb::copy_to(policy, ...) would see ngemb's overloads only).
//
// For a policy P, a `const P& p`, sizes n, m, k, elements, and any plain value type T:
//   typename P::template buffer<T>      move-only, default-constructible, buffer(p, n) holds n values; size(),
//                                       data(), as_view() (view<T>, or view<const T> on a const buffer)
//   for_each_n(p, n, op)                op(i) for every i in [0, n), for an op callable with std::size_t
//   copy_to(p, view<const T>, view<T>)  host values into policy memory (ordered before later work on p)
//   copy_to_host(p, view<const T>, view<T>)  policy memory back to host values, complete on return
//   gemm_nt(p, m, n, k, a, b, c)        C = A * B^T for float and double, and fp32 A and C with bf16 or fp16 B
//   gemm_nn(p, m, n, k, a, b, ldb, c)   C = A * B for float and double, B's rows ldb elements apart
//   sort_pairs(p, keys_in, values_in, keys_out, values_out, key_bits, P::buffer<std::byte>& temp)
//                                       a stable sort by key of std::int32_t keys and values (expert dispatch)
//   row_chunk(p)                        consecutive row elements one element operation handles
//   for_operations_of(p, elements)      the policy for operations that each cover `elements` elements
//   synchronize(p)                      waits for all work issued on p
//   get_memory_resource(p)              the memory resource p's buffers come from
#include <concepts>
#include <cstddef>
#include <cstdint>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/detail/sort_pairs.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

namespace detail {

/// The element operation the concept's for_each_n check passes (any callable with std::size_t must work).
struct policy_probe_op {
  NGEMB_HD void operator()(std::size_t /*i*/) const {}
};

template <class P, class T>
concept policy_buffer_of =
    std::default_initializable<typename P::template buffer<T>> &&
    std::constructible_from<typename P::template buffer<T>, const P&, std::size_t> &&
    std::movable<typename P::template buffer<T>> && !std::copy_constructible<typename P::template buffer<T>> &&
    requires(typename P::template buffer<T>& buffer, const typename P::template buffer<T>& read_only) {
      { read_only.size() } -> std::same_as<std::size_t>;
      { buffer.data() } -> std::same_as<T*>;
      { read_only.data() } -> std::same_as<const T*>;
      { buffer.as_view() } -> std::same_as<view<T>>;
      { read_only.as_view() } -> std::same_as<view<const T>>;
    };

template <class P>
concept policy_has_buffer = requires { typename P::template buffer<float>; } && policy_buffer_of<P, float> &&
                            policy_buffer_of<P, std::byte> && policy_buffer_of<P, bf16>;

template <class P>
concept policy_has_for_each_n = requires(const P& p, std::size_t n) { for_each_n(p, n, policy_probe_op{}); };

template <class P>
concept policy_has_copy_to = requires(const P& p, view<const float> source, view<float> destination) {
  copy_to(p, source, destination);
};

template <class P>
concept policy_has_copy_to_host = requires(const P& p, view<const float> source, view<float> destination) {
  copy_to_host(p, source, destination);
};

template <class P>
concept policy_has_gemm_nt =
    requires(const P& p, std::size_t m, view<const float> af, view<float> cf, view<const double> ad, view<double> cd) {
      gemm_nt(p, m, m, m, af, af, cf);
      gemm_nt(p, m, m, m, ad, ad, cd);
    };

template <class P>
concept policy_has_gemm_nn = requires(const P& p, std::size_t m, view<const float> af, view<float> cf,
                                      view<const double> ad, view<double> cd) {
  gemm_nn(p, m, m, m, af, af, m, cf);
  gemm_nn(p, m, m, m, ad, ad, m, cd);
};

template <class P>
concept policy_has_mixed_gemm_nt = requires(const P& p, std::size_t m, view<const float> a, view<const bf16> b16,
                                            view<const fp16> h16, view<float> c) {
  gemm_nt(p, m, m, m, a, b16, c);
  gemm_nt(p, m, m, m, a, h16, c);
};

template <class P>
concept policy_has_sort_pairs =
    policy_has_buffer<P> && requires(const P& p, view<const std::int32_t> in, view<std::int32_t> out, int bits,
                                     typename P::template buffer<std::byte>& temp) {
      sort_pairs(p, in, in, out, out, bits, temp);
    };

template <class P>
concept policy_has_row_chunk = requires(const P& p) {
  { row_chunk(p) } -> std::convertible_to<std::size_t>;
};

template <class P>
concept policy_has_for_operations_of = requires(const P& p, std::size_t elements) {
  { for_operations_of(p, elements) } -> std::convertible_to<P>;
};

template <class P>
concept policy_has_synchronize = requires(const P& p) { synchronize(p); };

template <class P>
concept policy_has_memory_resource = requires(const P& p) {
  { get_memory_resource(p) } -> std::copyable;
};

}  // namespace detail

/// A type ngemb's parts and kernels can run under (the list above).
template <class P>
concept execution_policy =
    std::copyable<P> && detail::policy_has_buffer<P> && detail::policy_has_for_each_n<P> &&
    detail::policy_has_copy_to<P> && detail::policy_has_copy_to_host<P> && detail::policy_has_gemm_nt<P> &&
    detail::policy_has_gemm_nn<P> && detail::policy_has_mixed_gemm_nt<P> && detail::policy_has_sort_pairs<P> &&
    detail::policy_has_row_chunk<P> && detail::policy_has_for_operations_of<P> && detail::policy_has_synchronize<P> &&
    detail::policy_has_memory_resource<P>;

namespace detail {

/// execution_policy<P> one requirement at a time, so a compiler error names the missing member.
template <class P>
constexpr bool check_execution_policy() {
  static_assert(std::copyable<P>, "execution_policy: the policy must be copyable (parts keep a copy)");
  static_assert(policy_has_buffer<P>,
                "execution_policy: the policy must have `template <class T> using buffer`, move-only and "
                "default-constructible, made as buffer(policy, n), with size(), data() and as_view()");
  static_assert(policy_has_for_each_n<P>, "execution_policy: missing for_each_n(policy, n, op)");
  static_assert(policy_has_copy_to<P>, "execution_policy: missing copy_to(policy, view<const T>, view<T>)");
  static_assert(policy_has_copy_to_host<P>,
                "execution_policy: missing copy_to_host(policy, view<const T>, view<T>)");
  static_assert(policy_has_gemm_nt<P>,
                "execution_policy: missing gemm_nt(policy, m, n, k, a, b, c) for float and double");
  static_assert(policy_has_gemm_nn<P>,
                "execution_policy: missing gemm_nn(policy, m, n, k, a, b, ldb, c) for float and double");
  static_assert(policy_has_mixed_gemm_nt<P>,
                "execution_policy: missing the mixed gemm_nt(policy, m, n, k, fp32 a, bf16/fp16 b, fp32 c)");
  static_assert(policy_has_sort_pairs<P>,
                "execution_policy: missing sort_pairs(policy, keys_in, values_in, keys_out, values_out, key_bits, "
                "buffer<std::byte>& temp) for std::int32_t keys and values");
  static_assert(policy_has_row_chunk<P>, "execution_policy: missing row_chunk(policy)");
  static_assert(policy_has_for_operations_of<P>,
                "execution_policy: missing for_operations_of(policy, elements) returning a policy");
  static_assert(policy_has_synchronize<P>, "execution_policy: missing synchronize(policy)");
  static_assert(policy_has_memory_resource<P>, "execution_policy: missing get_memory_resource(policy)");
  return execution_policy<P>;
}

}  // namespace detail

static_assert(detail::check_execution_policy<host_policy>());

}  // namespace ngemb
