#pragma once
// The MPI communicator: ranks are host processes (mpirun -n P), buffers are host memory (policy_type is
// host_policy). Include this header only from programs that link MPI (CMake: ngemb::mpi).
//
//   int main(int argc, char** argv) {
//     ngemb::mpi_session mpi(&argc, &argv);       // MPI_Init_thread, and MPI_Finalize at the end
//     ngemb::mpi_communicator world;               // a private duplicate of MPI_COMM_WORLD, 60 s per collective
//     ...
//   }
//
// Every collective is non-blocking MPI polled with MPI_Test until it completes or timeout() passes, so a peer that
// exited or stalled raises communication_error on the others instead of hanging them. Run with
// `mpirun --enable-recovery` (OpenMPI) to keep the survivors alive after a rank exits, so they can report; without
// it mpirun ends them all. After a communication_error the request stays in flight (MPI forbids cancelling or
// freeing a collective's request), so the buffers of that call must outlive the process's use of MPI, and the
// communicator is unusable: report and exit (MPI_Finalize may wait for the dead peer, so end with _exit or
// MPI_Abort).
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "ngemb/comm/communicator.hpp"
#include "ngemb/comm/detail/collectives.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

namespace detail {

inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    return "MPI error " + std::to_string(code);
  }
  return std::string(text, static_cast<std::size_t>(length)) + " (MPI error " + std::to_string(code) + ")";
}

/// The MPI datatype that moves T. bf16 and fp16 travel as their 16 bits: MPI has no such floating types, and
/// all_to_all_v only moves them.
template <class T>
MPI_Datatype mpi_datatype() {
  static_assert(sizeof(bf16) == 2 && sizeof(fp16) == 2, "bf16 and fp16 must be 16 bits");
  if constexpr (std::is_same_v<T, std::uint32_t>) {
    return MPI_UINT32_T;
  } else if constexpr (std::is_same_v<T, std::int32_t>) {
    return MPI_INT32_T;
  } else if constexpr (std::is_same_v<T, float>) {
    return MPI_FLOAT;
  } else if constexpr (std::is_same_v<T, double>) {
    return MPI_DOUBLE;
  } else {
    static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, fp16>);
    return MPI_UINT16_T;
  }
}

/// The duplicated communicator, freed when the last mpi_communicator sharing it dies (unless MPI already ended).
class mpi_comm_handle {
 public:
  explicit mpi_comm_handle(MPI_Comm comm) : comm_(comm) {}
  mpi_comm_handle(const mpi_comm_handle&) = delete;
  mpi_comm_handle& operator=(const mpi_comm_handle&) = delete;
  ~mpi_comm_handle() {
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (finalized == 0) {
      MPI_Comm_free(&comm_);
    }
  }
  [[nodiscard]] MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_;
};

}  // namespace detail

/// Initialises MPI for the program's life (MPI_THREAD_FUNNELED: only the main thread calls MPI; host_policy's
/// worker threads never do) unless it is already initialised, and finalises it on destruction if it initialised
/// it. Create it first in main, so every communicator dies before it.
class mpi_session {
 public:
  mpi_session() : mpi_session(nullptr, nullptr) {}
  /// main's argc and argv, which MPI may read and strip its own arguments from.
  mpi_session(int* argc, char*** argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized != 0) {
      return;
    }
    int provided = 0;
    const int status = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (status != MPI_SUCCESS) {
      throw communication_error("mpi_session: MPI_Init_thread failed: " + detail::mpi_error_string(status));
    }
    owns_mpi_ = true;
  }
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;
  ~mpi_session() {
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (owns_mpi_ && finalized == 0) {
      MPI_Finalize();
    }
  }

  /// Whether this session initialised MPI (and so finalises it).
  [[nodiscard]] bool owns_mpi() const { return owns_mpi_; }

 private:
  bool owns_mpi_ = false;
};

/// A communicator over the ranks of an MPI communicator. It talks on its own duplicate of `parent`, so its traffic
/// never matches the user's messages; copies are cheap and share the duplicate (each copy keeps its own counters).
/// Counts and displacements are MPI ints: a buffer of more than INT_MAX elements per call is an invalid_argument.
class mpi_communicator {
 public:
  using policy_type = host_policy;

  explicit mpi_communicator(MPI_Comm parent = MPI_COMM_WORLD,
                            std::chrono::milliseconds timeout = default_communication_timeout)
      : timeout_(timeout) {
    int initialized = 0;
    int finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized == 0 || finalized != 0) {
      throw invalid_argument("mpi_communicator: MPI is not initialised (or already finalised): call MPI_Init "
                             "first, or create an ngemb::mpi_session at the start of main");
    }
    check(MPI_Comm_rank(parent, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(parent, &size_), "MPI_Comm_size");
    // The duplication is a collective too: a rank that never arrives must not hang the others here either.
    MPI_Comm duplicate = MPI_COMM_NULL;
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Comm_idup(parent, &duplicate, &request), "MPI_Comm_idup");
    wait(request, "MPI_Comm_idup");
    comm_ = std::make_shared<const detail::mpi_comm_handle>(duplicate);
    check(MPI_Comm_set_errhandler(duplicate, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    const auto ranks = static_cast<std::size_t>(size_);
    send_counts_.resize(ranks);
    send_displacements_.resize(ranks);
    receive_counts_.resize(ranks);
    receive_displacements_.resize(ranks);
  }

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  [[nodiscard]] std::chrono::milliseconds timeout() const { return timeout_; }
  [[nodiscard]] communication_counters counters() const { return counters_; }
  void reset_counters() { counters_ = {}; }
  /// The duplicated communicator, e.g. to broadcast an ncclUniqueId to the ranks of a nccl_communicator.
  [[nodiscard]] MPI_Comm native_handle() const { return comm_->get(); }

  void barrier() {
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Ibarrier(native_handle(), &request), "barrier");
    wait(request, "barrier");
    detail::count_collective(counters_, 0, 0);
  }

  void exchange_counts(std::span<const std::size_t> send, std::span<std::size_t> receive) {
    static_assert(sizeof(std::size_t) == sizeof(std::uint64_t), "counts travel as MPI_UINT64_T");
    detail::check_count_arrays(send.size(), receive.size(), size_);
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Ialltoall(send.data(), 1, MPI_UINT64_T, receive.data(), 1, MPI_UINT64_T, native_handle(), &request),
          "exchange_counts");
    wait(request, "exchange_counts");
    const std::uint64_t peer_bytes = static_cast<std::uint64_t>(size_ - 1) * sizeof(std::size_t);
    detail::count_collective(counters_, peer_bytes, peer_bytes);
  }

  template <class T>
  void all_to_all_v(const host_policy& /*policy*/, std::type_identity_t<view<const T>> send,
                    std::span<const std::size_t> send_counts, view<T> receive,
                    std::span<const std::size_t> receive_counts) {
    static_assert(detail::communicated_element<T>,
                  "all_to_all_v: elements must be std::uint32_t, std::int32_t, float, double, bf16 or fp16");
    detail::check_counts("all_to_all_v", "send_counts", send_counts, size_, send.size());
    detail::check_counts("all_to_all_v", "receive_counts", receive_counts, size_, receive.size());
    to_mpi_layout("send", send_counts, send_counts_, send_displacements_);
    to_mpi_layout("receive", receive_counts, receive_counts_, receive_displacements_);
    const MPI_Datatype type = detail::mpi_datatype<T>();
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Ialltoallv(send.data(), send_counts_.data(), send_displacements_.data(), type, receive.data(),
                         receive_counts_.data(), receive_displacements_.data(), type, native_handle(), &request),
          "all_to_all_v");
    wait(request, "all_to_all_v");
    detail::count_collective(counters_, detail::bytes_to_peers(send_counts, rank_, sizeof(T)),
                             detail::bytes_to_peers(receive_counts, rank_, sizeof(T)));
  }

  template <class T>
  void all_reduce_sum(const host_policy& /*policy*/, view<T> data) {
    static_assert(detail::summed_element<T>, "all_reduce_sum: elements must be float or double");
    const int count = mpi_count("all_reduce_sum", "data's size", data.size());
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Iallreduce(MPI_IN_PLACE, data.data(), count, detail::mpi_datatype<T>(), MPI_SUM, native_handle(),
                         &request),
          "all_reduce_sum");
    wait(request, "all_reduce_sum");
    const std::uint64_t bytes = detail::all_reduce_bytes(data.size(), size_, sizeof(T));
    detail::count_collective(counters_, bytes, bytes);
  }

  template <class T>
  void reduce_scatter_sum(const host_policy& /*policy*/, std::type_identity_t<view<const T>> in, view<T> out) {
    static_assert(detail::summed_element<T>, "reduce_scatter_sum: elements must be float or double");
    detail::check_reduce_scatter(in.size(), out.size(), size_);
    // MPI offsets the blocks of `in` with int arithmetic: its whole size must fit, and then out's (one block) does.
    mpi_count("reduce_scatter_sum", "in's size", in.size());
    const auto block = static_cast<int>(out.size());
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Ireduce_scatter_block(in.data(), out.data(), block, detail::mpi_datatype<T>(), MPI_SUM,
                                    native_handle(), &request),
          "reduce_scatter_sum");
    wait(request, "reduce_scatter_sum");
    const std::uint64_t bytes = detail::reduce_scatter_bytes(out.size(), size_, sizeof(T));
    detail::count_collective(counters_, bytes, bytes);
  }

 private:
  /// Polls between clock reads: a poll costs about as much as reading the clock, and a collective that completes
  /// within a few polls should not pay for the deadline.
  static constexpr unsigned polls_per_clock_read = 256;

  [[nodiscard]] std::string where() const {
    return "rank " + std::to_string(rank_) + " of " + std::to_string(size_);
  }

  void check(int status, const char* collective) const {
    if (status != MPI_SUCCESS) {
      throw communication_error(std::string("mpi_communicator: ") + collective + " failed on " + where() + ": " +
                                detail::mpi_error_string(status));
    }
  }

  void wait(MPI_Request& request, const char* collective) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    for (unsigned polls = 1;; ++polls) {
      int done = 0;
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), collective);
      if (done != 0) {
        return;
      }
      // A rank spinning on its core would starve a peer sharing it (more ranks than cores: 4 ranks on 2 cores
      // looked up 100x slower without this); with a core to itself, yield returns at once.
      std::this_thread::yield();
      if (polls % polls_per_clock_read == 0 && std::chrono::steady_clock::now() >= deadline) {
        throw communication_error(std::string("mpi_communicator: ") + collective + " did not finish within " +
                                  std::to_string(timeout_.count()) + " ms on " + where() +
                                  ": a peer rank likely exited or stalled (or called a different collective)");
      }
    }
  }

  static int mpi_count(const char* collective, const char* what, std::size_t value) {
    if (value > static_cast<std::size_t>(INT_MAX)) {
      throw invalid_argument(std::string("mpi_communicator: ") + collective + ": " + what + " is " +
                             std::to_string(value) + " elements, above MPI's int limit " + std::to_string(INT_MAX));
    }
    return static_cast<int>(value);
  }

  /// Counts and their exclusive prefix sums as the int arrays MPI takes.
  static void to_mpi_layout(const char* side, std::span<const std::size_t> counts, std::vector<int>& mpi_counts,
                            std::vector<int>& displacements) {
    constexpr auto limit = static_cast<std::size_t>(INT_MAX);
    std::size_t offset = 0;
    for (std::size_t peer = 0; peer < counts.size(); ++peer) {
      if (counts[peer] > limit || offset > limit) {
        const bool count_too_large = counts[peer] > limit;
        throw invalid_argument(std::string("mpi_communicator: all_to_all_v: the ") + side + " block of rank " +
                               std::to_string(peer) + (count_too_large ? " has a count of " : " starts at ") +
                               std::to_string(count_too_large ? counts[peer] : offset) +
                               " elements, above MPI's int limit " + std::to_string(INT_MAX));
      }
      displacements[peer] = static_cast<int>(offset);
      mpi_counts[peer] = static_cast<int>(counts[peer]);
      offset += counts[peer];
    }
  }

  std::shared_ptr<const detail::mpi_comm_handle> comm_;
  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds timeout_;
  communication_counters counters_{};
  // MPI's int counts and displacements, kept between calls so a collective allocates nothing.
  std::vector<int> send_counts_;
  std::vector<int> send_displacements_;
  std::vector<int> receive_counts_;
  std::vector<int> receive_displacements_;
};

static_assert(detail::check_communicator<mpi_communicator>());

}  // namespace ngemb
