#pragma once
// The one-rank communicator: rank 0 of 1. Code written for many ranks (a sharded store) runs unchanged on one, and
// the collectives reduce to local copies in the policy's memory. Works for any execution policy: with
// <ngemb/policy/device_policy.cuh> included first, self_communicator<device_policy> copies on the device.
#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>

#include "ngemb/comm/communicator.hpp"
#include "ngemb/comm/detail/collectives.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

namespace detail {

/// One element of a copy between two buffers in the same policy's memory. The policy's copy_to copies host values
/// into policy memory (on a device, a host-to-device copy), so a copy that may stay on the device runs as an
/// element operation instead.
template <class T>
struct copy_elements_op {
  const T* source;
  T* destination;
  NGEMB_HD void operator()(std::size_t i) const { destination[i] = source[i]; }
};

}  // namespace detail

/// A communicator of one rank. Nothing crosses to another rank, so its counters count collectives and no bytes,
/// and timeout() is only reported (nothing waits).
template <class Policy = host_policy>
class self_communicator {
 public:
  using policy_type = Policy;

  explicit self_communicator(std::chrono::milliseconds timeout = default_communication_timeout)
      : timeout_(timeout) {}

  [[nodiscard]] int rank() const { return 0; }
  [[nodiscard]] int size() const { return 1; }
  [[nodiscard]] std::chrono::milliseconds timeout() const { return timeout_; }
  [[nodiscard]] communication_counters counters() const { return counters_; }
  void reset_counters() { counters_ = {}; }

  void barrier() { ++counters_.collectives; }

  void exchange_counts(std::span<const std::size_t> send, std::span<std::size_t> receive) {
    detail::check_count_arrays(send.size(), receive.size(), size());
    receive[0] = send[0];
    ++counters_.collectives;
  }

  template <class T>
  void all_to_all_v(const Policy& policy, std::type_identity_t<view<const T>> send,
                    std::span<const std::size_t> send_counts, view<T> receive,
                    std::span<const std::size_t> receive_counts) {
    static_assert(detail::communicated_element<T>,
                  "all_to_all_v: elements must be std::uint32_t, std::int32_t, float, double, bf16 or fp16");
    detail::check_counts("all_to_all_v", "send_counts", send_counts, size(), send.size());
    detail::check_counts("all_to_all_v", "receive_counts", receive_counts, size(), receive.size());
    if (send_counts[0] != receive_counts[0]) {
      throw shape_mismatch("all_to_all_v: rank 0 of 1 sends " + std::to_string(send_counts[0]) +
                           " elements to itself but receives " + std::to_string(receive_counts[0]));
    }
    copy(policy, send, receive);
    ++counters_.collectives;
  }

  template <class T>
  void all_reduce_sum(const Policy& /*policy*/, view<T> /*data*/) {
    static_assert(detail::summed_element<T>, "all_reduce_sum: elements must be float or double");
    ++counters_.collectives;
  }

  template <class T>
  void reduce_scatter_sum(const Policy& policy, std::type_identity_t<view<const T>> in, view<T> out) {
    static_assert(detail::summed_element<T>, "reduce_scatter_sum: elements must be float or double");
    detail::check_reduce_scatter(in.size(), out.size(), size());
    copy(policy, in, out);
    ++counters_.collectives;
  }

 private:
  template <class T>
  static void copy(const Policy& policy, view<const T> source, view<T> destination) {
    for_each_n(policy, source.size(), detail::copy_elements_op<T>{source.data(), destination.data()});
  }

  std::chrono::milliseconds timeout_;
  communication_counters counters_{};
};

static_assert(detail::check_communicator<self_communicator<>>());

}  // namespace ngemb
