#pragma once
// Stable key-value sort under the host policy (device_policy.cuh adds the CUB radix-sort overload with the same
// signature): what token dispatch uses to group (token, pick) pairs by expert.
#include <algorithm>
#include <cstddef>
#include <numeric>
#include <string>
#include <span>

#include "ngemb/core/checked.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/host_buffer.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

namespace detail {

inline void check_sort_pairs_sizes(std::size_t keys_in, std::size_t values_in, std::size_t keys_out,
                                   std::size_t values_out) {
  if (values_in != keys_in || keys_out != keys_in || values_out != keys_in) {
    throw shape_mismatch("sort_pairs: keys and values in and out must all hold " + std::to_string(keys_in) +
                         " elements, got " + std::to_string(values_in) + ", " + std::to_string(keys_out) + " and " +
                         std::to_string(values_out));
  }
}

}  // namespace detail

/// Sorts (key, value) pairs by key, stably (equal keys keep their input order), into keys_out / values_out (policy
/// memory, not overlapping the inputs). Keys are non-negative and below 2^key_bits (the radix sort on a device
/// looks at those bits only); `temp` is scratch the call may grow and later calls reuse.
template <class Key, class Value>
void sort_pairs(const host_policy& policy, view<const Key> keys_in, view<const Value> values_in, view<Key> keys_out,
                view<Value> values_out, int /*key_bits*/, host_buffer<std::byte>& temp) {
  detail::check_sort_pairs_sizes(keys_in.size(), values_in.size(), keys_out.size(), values_out.size());
  // The permutation lives in `temp` (the policy's resource), as CUB's temporary storage does on a device.
  const std::size_t bytes = checked_bytes<std::size_t>(keys_in.size(), "sort_pairs");
  if (temp.size() < bytes) {
    temp = host_buffer<std::byte>(policy, bytes, for_overwrite);
  }
  const std::span<std::size_t> order(reinterpret_cast<std::size_t*>(temp.data()), keys_in.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t lhs, std::size_t rhs) { return keys_in[lhs] < keys_in[rhs]; });
  for (std::size_t i = 0; i < order.size(); ++i) {
    keys_out[i] = keys_in[order[i]];
    values_out[i] = values_in[order[i]];
  }
}

}  // namespace ngemb
