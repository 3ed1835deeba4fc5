#pragma once
// Parameters arrive as host arrays and live in policy memory: one copy into a new buffer, synchronised so the
// host array may die when the call returns (constructors run once, off the hot path). Every part's constructor
// uploads its parameters, so this is where a policy first meets the library: it checks the execution_policy
// contract there, naming a missing member.
#include <type_traits>

#include "ngemb/core/views.hpp"
#include "ngemb/policy/policy.hpp"

namespace ngemb {

template <class Policy, class T>
typename Policy::template buffer<T> upload(const Policy& policy, view<const T> values) {
  static_assert(detail::check_execution_policy<Policy>());
  typename Policy::template buffer<T> buffer(policy, values.size());
  if (!values.empty()) {
    copy_to(policy, values, buffer.as_view());
    synchronize(policy);
  }
  return buffer;
}

}  // namespace ngemb
