#pragma once
// The `communicator` concept: the collectives a sharded store needs between ranks, on buffers in its policy's
// memory. Backends: self_communicator (one rank, for code that is written for many and run on one),
// mpi_communicator (host processes, comm/mpi_communicator.hpp) and nccl_communicator (devices,
// comm/nccl_communicator.cuh). Every collective waits at most timeout(), then throws communication_error, so a
// dead or stalled rank ends the others with an error instead of a hang.
//
// Counts are host arrays of elements (not bytes), one per rank in rank order; the data of peer p sits at the
// exclusive prefix sum of the counts before p. Collectives are called by every rank in the same order.
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "ngemb/core/views.hpp"

namespace ngemb {

/// What a communicator has moved since its counters were last reset, counted on this rank: bytes of payload it
/// sent to and received from other ranks (its own share, copied locally, is not counted), and collectives called.
struct communication_counters {
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t collectives = 0;
};

/// The default wait of a collective before it raises communication_error.
inline constexpr std::chrono::milliseconds default_communication_timeout{60'000};

namespace detail {

// One concept per member group, so a type that is not a communicator fails on a static_assert naming what it lacks.
template <class C>
concept communicator_identity = requires(const C& c) {
  typename C::policy_type;
  { c.rank() } -> std::convertible_to<int>;
  { c.size() } -> std::convertible_to<int>;
  { c.timeout() } -> std::convertible_to<std::chrono::milliseconds>;
  { c.counters() } -> std::convertible_to<communication_counters>;
};
template <class C>
concept communicator_collectives =
    requires(C& c, const typename C::policy_type& policy, std::span<const std::size_t> send_counts,
             std::span<std::size_t> receive_counts, view<const std::uint32_t> ids_in, view<std::uint32_t> ids_out,
             view<const float> values_in, view<float> values_out) {
      c.barrier();
      c.reset_counters();
      c.exchange_counts(send_counts, receive_counts);
      c.all_to_all_v(policy, ids_in, send_counts, ids_out, std::span<const std::size_t>(receive_counts));
      c.all_to_all_v(policy, values_in, send_counts, values_out, std::span<const std::size_t>(receive_counts));
      c.all_reduce_sum(policy, values_out);
      c.reduce_scatter_sum(policy, values_in, values_out);
    };

}  // namespace detail

/// A communicator over `size()` ranks, this one being `rank()`:
/// - `barrier()`;
/// - `exchange_counts(send, receive)`: all-to-all of one count per peer (host arrays of size() counts);
/// - `all_to_all_v(policy, send, send_counts, receive, receive_counts)`: peer p receives send's block p, this rank
///   receives peer p's block into receive's block p (element types: 32-bit ids, float, double, bf16, fp16);
/// - `all_reduce_sum(policy, data)`: data = the element-wise sum over ranks (float or double), the same on every rank
///   (the summation order is the backend's: equal on every rank, not necessarily rank order);
/// - `reduce_scatter_sum(policy, in, out)`: in holds size() equal blocks of out.size(); rank r gets the sum of
///   every rank's block r;
/// - `timeout()`, `counters()`, `reset_counters()`.
/// Sizes that disagree between ranks are undefined in MPI and NCCL; the sharded store exchanges counts first.
template <class C>
concept communicator = detail::communicator_identity<C> && detail::communicator_collectives<C>;

namespace detail {

template <class C>
constexpr bool check_communicator() {
  static_assert(communicator_identity<C>,
                "communicator: must have policy_type, rank(), size(), timeout() and counters()");
  static_assert(communicator_collectives<C>,
                "communicator: must have barrier(), reset_counters(), exchange_counts(send, receive), "
                "all_to_all_v(policy, send, send_counts, receive, receive_counts), all_reduce_sum(policy, data) "
                "and reduce_scatter_sum(policy, in, out)");
  return true;
}

}  // namespace detail

}  // namespace ngemb
