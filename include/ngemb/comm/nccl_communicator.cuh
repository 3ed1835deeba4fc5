#pragma once
// The NCCL communicator: ranks are GPUs (one per process or per thread), buffers are device memory (policy_type is
// device_policy). Collectives run on the policy's stream and the call waits for them, up to timeout(). Include this
// header only from nvcc-compiled code that links NCCL (CMake: ngemb::nccl).
//
// All ranks need the same ncclUniqueId, made by one of them and sent to the others by any means; with MPI
// (comm/mpi_communicator.hpp, which this header does not include, so NCCL users need not link MPI):
//
//   ngemb::mpi_communicator world;
//   ncclUniqueId id{};
//   if (world.rank() == 0) ncclGetUniqueId(&id);
//   MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, world.native_handle());
//   cudaSetDevice(local_rank);                    // the communicator binds to the device current at creation
//   ngemb::nccl_communicator gpus(id, world.rank(), world.size());
//
// The communicator is non-blocking (ncclConfig_t::blocking = 0): no NCCL call waits inside NCCL, and every wait polls
// the stream and ncclCommGetAsyncError until done or timeout(), so a dead or stalled peer raises communication_error
// instead of hanging. The timeout covers the work queued on the stream before the collective too. After a timeout
// or an asynchronous NCCL error the communicator is aborted (ncclCommAbort stops its kernels) and every later call
// throws communication_error: the ranks must tear down and may create a new one.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "ngemb/comm/communicator.hpp"
#include "ngemb/comm/detail/collectives.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/cuda/error.cuh"
#include "ngemb/policy/device_buffer.cuh"
#include "ngemb/policy/device_policy.cuh"

namespace ngemb {

namespace detail {

inline std::string nccl_error_text(ncclResult_t result) {
  return std::string(ncclGetErrorString(result)) + " (ncclResult " + std::to_string(static_cast<int>(result)) + ")";
}

template <class T>
ncclDataType_t nccl_sum_type() {
  return std::is_same_v<T, float> ? ncclFloat32 : ncclFloat64;
}

/// Ends a communicator without ever waiting forever: ncclCommFinalize flushes its work (asynchronously, as the
/// communicator is non-blocking); a peer that never finalises makes it abort after the timeout instead.
struct nccl_comm_closer {
  std::chrono::milliseconds timeout;
  void operator()(ncclComm_t comm) const noexcept {
    ncclResult_t state = ncclCommFinalize(comm);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (state == ncclInProgress && std::chrono::steady_clock::now() < deadline) {
      if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) {
        break;
      }
    }
    if (state == ncclSuccess) {
      ncclCommDestroy(comm);
    } else {
      ncclCommAbort(comm);
    }
  }
};

struct cuda_stream_destroyer {
  void operator()(cudaStream_t stream) const noexcept { cudaStreamDestroy(stream); }
};

}  // namespace detail

/// A communicator over `size` GPUs, this one being `rank`. Move-only: it owns an NCCL communicator, a stream for
/// the collectives that take no policy (barrier, exchange_counts) and a little device scratch.
class nccl_communicator {
 public:
  using policy_type = device_policy;

  nccl_communicator(ncclUniqueId id, int rank, int size,
                    std::chrono::milliseconds timeout = default_communication_timeout)
      : rank_(rank), size_(size), timeout_(timeout) {
    if (size < 1 || rank < 0 || rank >= size) {
      throw invalid_argument("nccl_communicator: rank " + std::to_string(rank) + " of " + std::to_string(size) +
                             ": expected size >= 1 and 0 <= rank < size");
    }
    state_ = std::make_unique<resources>(timeout);
    cudaStream_t stream = nullptr;
    NGEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    state_->stream.reset(stream);
    // One count per peer sent, one received, and the word a barrier sums.
    const auto ranks = static_cast<std::size_t>(size);
    state_->scratch = device_buffer<std::uint64_t>(device_policy{}.on(stream), 2 * ranks + 1);
    NGEMB_CUDA_CHECK(
        cudaMemsetAsync(state_->scratch.data(), 0, state_->scratch.size() * sizeof(std::uint64_t), stream));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = nullptr;
    const ncclResult_t started = ncclCommInitRankConfig(&comm, size, id, rank, &config);
    state_->comm.reset(comm);
    settle(started, "ncclCommInitRankConfig");
  }

  nccl_communicator(const nccl_communicator&) = delete;
  nccl_communicator& operator=(const nccl_communicator&) = delete;
  nccl_communicator(nccl_communicator&&) noexcept = default;
  nccl_communicator& operator=(nccl_communicator&&) noexcept = default;
  ~nccl_communicator() = default;

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  [[nodiscard]] std::chrono::milliseconds timeout() const { return timeout_; }
  [[nodiscard]] communication_counters counters() const { return counters_; }
  void reset_counters() { counters_ = {}; }
  /// The NCCL communicator (null once aborted).
  [[nodiscard]] ncclComm_t native_handle() const { return state_ ? state_->comm.get() : nullptr; }

  void barrier() {
    const ncclComm_t handle = comm("barrier");
    std::uint64_t* word = state_scratch() + 2 * static_cast<std::size_t>(size_);
    settle(ncclAllReduce(word, word, 1, ncclUint64, ncclSum, handle, own_stream()), "barrier");
    wait(own_stream(), "barrier");
    detail::count_collective(counters_, 0, 0);
  }

  void exchange_counts(std::span<const std::size_t> send, std::span<std::size_t> receive) {
    static_assert(sizeof(std::size_t) == sizeof(std::uint64_t), "counts travel as ncclUint64");
    detail::check_count_arrays(send.size(), receive.size(), size_);
    const ncclComm_t handle = comm("exchange_counts");
    const auto ranks = static_cast<std::size_t>(size_);
    std::uint64_t* sent = state_scratch();
    std::uint64_t* received = sent + ranks;
    const cudaStream_t stream = own_stream();
    NGEMB_CUDA_CHECK(cudaMemcpyAsync(sent, send.data(), ranks * sizeof(std::uint64_t), cudaMemcpyHostToDevice, stream));
    ncclGroupStart();
    ncclResult_t issued = ncclSuccess;
    for (std::size_t peer = 0; peer < ranks && issued == ncclSuccess; ++peer) {
      issued = ncclSend(sent + peer, 1, ncclUint64, static_cast<int>(peer), handle, stream);
      if (issued == ncclSuccess) {
        issued = ncclRecv(received + peer, 1, ncclUint64, static_cast<int>(peer), handle, stream);
      }
    }
    end_group(issued, "exchange_counts");
    wait(stream, "exchange_counts");
    // Only now, with the exchange complete: a copy to pageable memory blocks the host until it is done.
    NGEMB_CUDA_CHECK(cudaMemcpyAsync(receive.data(), received, ranks * sizeof(std::uint64_t), cudaMemcpyDeviceToHost,
                                     stream));
    NGEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::uint64_t peer_bytes = (ranks - 1) * sizeof(std::uint64_t);
    detail::count_collective(counters_, peer_bytes, peer_bytes);
  }

  template <class T>
  void all_to_all_v(const device_policy& policy, std::type_identity_t<view<const T>> send,
                    std::span<const std::size_t> send_counts, view<T> receive,
                    std::span<const std::size_t> receive_counts) {
    static_assert(detail::communicated_element<T>,
                  "all_to_all_v: elements must be std::uint32_t, std::int32_t, float, double, bf16 or fp16");
    detail::check_counts("all_to_all_v", "send_counts", send_counts, size_, send.size());
    detail::check_counts("all_to_all_v", "receive_counts", receive_counts, size_, receive.size());
    const ncclComm_t handle = comm("all_to_all_v");
    // Elements move as bytes: NCCL only copies them here, and byte counts fit every element type.
    const auto* send_bytes = reinterpret_cast<const std::uint8_t*>(send.data());
    auto* receive_bytes = reinterpret_cast<std::uint8_t*>(receive.data());
    std::size_t send_offset = 0;
    std::size_t receive_offset = 0;
    ncclGroupStart();
    ncclResult_t issued = ncclSuccess;
    for (std::size_t peer = 0; peer < send_counts.size() && issued == ncclSuccess; ++peer) {
      const int destination = static_cast<int>(peer);
      // Empty blocks are skipped on both sides (the peer's matching count is zero too), and never offset a null
      // pointer.
      if (send_counts[peer] != 0) {
        issued = ncclSend(send_bytes + send_offset * sizeof(T), send_counts[peer] * sizeof(T), ncclUint8,
                          destination, handle, policy.stream);
      }
      if (issued == ncclSuccess && receive_counts[peer] != 0) {
        issued = ncclRecv(receive_bytes + receive_offset * sizeof(T), receive_counts[peer] * sizeof(T), ncclUint8,
                          destination, handle, policy.stream);
      }
      send_offset += send_counts[peer];
      receive_offset += receive_counts[peer];
    }
    end_group(issued, "all_to_all_v");
    wait(policy.stream, "all_to_all_v");
    detail::count_collective(counters_, detail::bytes_to_peers(send_counts, rank_, sizeof(T)),
                             detail::bytes_to_peers(receive_counts, rank_, sizeof(T)));
  }

  template <class T>
  void all_reduce_sum(const device_policy& policy, view<T> data) {
    static_assert(detail::summed_element<T>, "all_reduce_sum: elements must be float or double");
    const ncclComm_t handle = comm("all_reduce_sum");
    if (!data.empty()) {  // every rank has the same size, so all skip together
      settle(ncclAllReduce(data.data(), data.data(), data.size(), detail::nccl_sum_type<T>(), ncclSum, handle,
                           policy.stream),
             "all_reduce_sum");
      wait(policy.stream, "all_reduce_sum");
    }
    const std::uint64_t bytes = detail::all_reduce_bytes(data.size(), size_, sizeof(T));
    detail::count_collective(counters_, bytes, bytes);
  }

  template <class T>
  void reduce_scatter_sum(const device_policy& policy, std::type_identity_t<view<const T>> in, view<T> out) {
    static_assert(detail::summed_element<T>, "reduce_scatter_sum: elements must be float or double");
    detail::check_reduce_scatter(in.size(), out.size(), size_);
    const ncclComm_t handle = comm("reduce_scatter_sum");
    if (!out.empty()) {
      settle(ncclReduceScatter(in.data(), out.data(), out.size(), detail::nccl_sum_type<T>(), ncclSum, handle,
                               policy.stream),
             "reduce_scatter_sum");
      wait(policy.stream, "reduce_scatter_sum");
    }
    const std::uint64_t bytes = detail::reduce_scatter_bytes(out.size(), size_, sizeof(T));
    detail::count_collective(counters_, bytes, bytes);
  }

 private:
  /// What the communicator owns, destroyed in reverse order: the NCCL communicator first, then the scratch (freed
  /// on the stream), then the stream. Held by one pointer, so a move (or move assignment) keeps that order.
  struct resources {
    explicit resources(std::chrono::milliseconds timeout) : comm(nullptr, detail::nccl_comm_closer{timeout}) {}
    std::unique_ptr<std::remove_pointer_t<cudaStream_t>, detail::cuda_stream_destroyer> stream;
    device_buffer<std::uint64_t> scratch;
    std::unique_ptr<std::remove_pointer_t<ncclComm_t>, detail::nccl_comm_closer> comm;
  };

  /// Polls between clock reads: each poll asks the stream and NCCL, about a microsecond.
  static constexpr unsigned polls_per_clock_read = 16;

  [[nodiscard]] std::string where() const {
    return "rank " + std::to_string(rank_) + " of " + std::to_string(size_);
  }
  [[nodiscard]] cudaStream_t own_stream() const { return state_->stream.get(); }
  [[nodiscard]] std::uint64_t* state_scratch() const { return state_->scratch.data(); }

  /// The live NCCL communicator, or communication_error once it was aborted (or moved from).
  [[nodiscard]] ncclComm_t comm(const char* collective) const {
    const ncclComm_t handle = native_handle();
    if (handle == nullptr) {
      throw communication_error(std::string("nccl_communicator: ") + collective + " on " + where() +
                                ": the communicator was aborted after an earlier failure (or moved from)");
    }
    return handle;
  }

  [[noreturn]] void abort_with(const std::string& message) {
    if (state_ && state_->comm) {
      ncclCommAbort(state_->comm.release());
    }
    throw communication_error("nccl_communicator: " + message);
  }

  [[noreturn]] void abort_after_timeout(const char* collective) {
    abort_with(std::string(collective) + " did not finish within " + std::to_string(timeout_.count()) + " ms on " +
               where() + ": a peer rank likely exited or stalled (or called a different collective); communicator "
               "aborted");
  }

  /// A non-blocking communicator may answer ncclInProgress: NCCL then finishes the call in the background, and no
  /// other call may be made on the communicator until ncclCommGetAsyncError says it is done.
  void settle(ncclResult_t result, const char* collective) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    for (unsigned polls = 1; result == ncclInProgress; ++polls) {
      if (ncclCommGetAsyncError(state_->comm.get(), &result) != ncclSuccess) {
        break;
      }
      if (polls % polls_per_clock_read == 0 && std::chrono::steady_clock::now() >= deadline) {
        abort_after_timeout(collective);
      }
    }
    if (result != ncclSuccess) {
      abort_with(std::string(collective) + " failed on " + where() + ": " + detail::nccl_error_text(result));
    }
  }

  /// Closes a group of sends and receives; `issued` is the first failure inside it, if any.
  void end_group(ncclResult_t issued, const char* collective) {
    const ncclResult_t ended = ncclGroupEnd();
    settle(issued != ncclSuccess ? issued : ended, collective);
  }

  /// Waits for `stream` (the collective and the work before it), watching NCCL for asynchronous errors.
  void wait(cudaStream_t stream, const char* collective) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    for (unsigned polls = 1;; ++polls) {
      const cudaError_t done = cudaStreamQuery(stream);
      if (done == cudaSuccess) {
        return;
      }
      if (done != cudaErrorNotReady) {
        NGEMB_CUDA_CHECK(done);
      }
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(state_->comm.get(), &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        abort_with(std::string(collective) + " failed on " + where() + ": " + detail::nccl_error_text(state));
      }
      if (polls % polls_per_clock_read == 0 && std::chrono::steady_clock::now() >= deadline) {
        abort_after_timeout(collective);
      }
    }
  }

  std::unique_ptr<resources> state_;
  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds timeout_;
  communication_counters counters_{};
};

static_assert(detail::check_communicator<nccl_communicator>());

}  // namespace ngemb
