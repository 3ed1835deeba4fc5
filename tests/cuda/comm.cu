// comm/ on the device: self_communicator<device_policy> and, where NCCL is found, a one-rank nccl_communicator run
// every collective on device buffers, for every element type, with the same patterns and expectations as the MPI
// tests (tests/comm_patterns.hpp, for one rank); arguments that disagree throw before anything is queued. Several
// ranks need several GPUs, which the device machines do not have: tests/comm.cpp covers them over MPI.
#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <vector>

#include "comm_patterns.hpp"
#include "ngemb/policy/device_policy.cuh"
// After device_policy.cuh: self_communicator<device_policy> finds its for_each_n by argument-dependent lookup.
#include "ngemb/comm/self_communicator.hpp"
#if NGEMB_TEST_NCCL
#include "ngemb/comm/nccl_communicator.cuh"
#endif

namespace {

constexpr std::chrono::milliseconds test_timeout{20'000};

template <class T>
ngemb::device_buffer<T> upload(const ngemb::device_policy& policy, const std::vector<T>& values) {
  ngemb::device_buffer<T> buffer(policy, values.size());
  ngemb::copy_to<T>(policy, values, buffer.as_view());
  return buffer;
}

template <class T>
std::vector<T> download(const ngemb::device_policy& policy, const ngemb::device_buffer<T>& buffer) {
  std::vector<T> values(buffer.size());
  ngemb::copy_to_host<T>(policy, buffer.as_view(), values);
  return values;
}

template <class T, class Communicator>
void check_all_to_all_v(Communicator& communicator, const ngemb::device_policy& policy) {
  for (int round = 0; round < comm_patterns::rounds; ++round) {
    CAPTURE(round);
    const std::vector<std::size_t> counts = comm_patterns::counts(0, 1, round, true);
    const auto send = upload(policy, comm_patterns::blocks<T>(0, 1, round, true));
    const std::vector<T> expected = comm_patterns::blocks<T>(0, 1, round, false);
    auto receive = upload(policy, std::vector<T>(expected.size()));  // zeros, which no sent value is
    communicator.template all_to_all_v<T>(policy, send.as_view(), counts, receive.as_view(), counts);
    CHECK(download(policy, receive) == expected);
  }
}

template <class T, class Communicator>
void check_sums(Communicator& communicator, const ngemb::device_policy& policy) {
  for (const std::size_t size : comm_patterns::sum_sizes) {
    CAPTURE(size);
    const std::vector<T> values = comm_patterns::block<T>(0, 0, 0, size);
    auto data = upload(policy, values);
    communicator.all_reduce_sum(policy, data.as_view());
    CHECK(download(policy, data) == values);  // one rank: the sum of one value, exact
    auto out = upload(policy, std::vector<T>(size));
    communicator.template reduce_scatter_sum<T>(policy, data.as_view(), out.as_view());
    CHECK(download(policy, out) == values);
  }
}

template <class Communicator>
void check_communicator(Communicator& communicator, const ngemb::device_policy& policy) {
  CHECK(communicator.rank() == 0);
  CHECK(communicator.size() == 1);
  check_all_to_all_v<std::uint32_t>(communicator, policy);
  check_all_to_all_v<std::int32_t>(communicator, policy);
  check_all_to_all_v<float>(communicator, policy);
  check_all_to_all_v<double>(communicator, policy);
  check_all_to_all_v<ngemb::bf16>(communicator, policy);
  check_all_to_all_v<ngemb::fp16>(communicator, policy);
  check_sums<float>(communicator, policy);
  check_sums<double>(communicator, policy);
  const std::vector<std::size_t> send{42};
  std::vector<std::size_t> received{0};
  communicator.exchange_counts(send, received);
  CHECK(received[0] == 42);
  communicator.barrier();
  // One rank sends nothing to another: every collective counted, no bytes.
  const ngemb::communication_counters counters = communicator.counters();
  CHECK(counters.bytes_sent == 0);
  CHECK(counters.bytes_received == 0);
  CHECK(counters.collectives == 6 * comm_patterns::rounds + 2 * 2 * std::size(comm_patterns::sum_sizes) + 2);

  const auto values = upload(policy, std::vector<float>{1.0f, 2.0f});
  auto out = upload(policy, std::vector<float>(3));
  const std::vector<std::size_t> two{2};
  const std::vector<std::size_t> two_twos{2, 2};
  CHECK_THROWS_AS(communicator.template all_to_all_v<float>(policy, values.as_view(), two, out.as_view(), two),
                  ngemb::shape_mismatch);
  CHECK_THROWS_AS(communicator.template all_to_all_v<float>(policy, values.as_view(), two_twos, out.as_view(), two),
                  ngemb::shape_mismatch);
  CHECK_THROWS_AS(communicator.template reduce_scatter_sum<float>(policy, values.as_view(), out.as_view()),
                  ngemb::shape_mismatch);
  CHECK(communicator.counters().collectives == counters.collectives);
}

}  // namespace

TEST_CASE("device: self_communicator<device_policy> runs every collective on device memory") {
  cudaStream_t stream = nullptr;
  NGEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    ngemb::self_communicator<ngemb::device_policy> communicator(test_timeout);
    check_communicator(communicator, ngemb::device_policy{}.on(stream));
  }
  NGEMB_CUDA_CHECK(cudaStreamDestroy(stream));
}

#if NGEMB_TEST_NCCL
TEST_CASE("device: a one-rank nccl_communicator runs every collective on device memory") {
  cudaStream_t stream = nullptr;
  NGEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    ncclUniqueId id{};
    REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
    ngemb::nccl_communicator communicator(id, 0, 1, test_timeout);
    CHECK(communicator.native_handle() != nullptr);
    check_communicator(communicator, ngemb::device_policy{}.on(stream));
    ngemb::nccl_communicator moved = std::move(communicator);
    moved.barrier();
    CHECK_THROWS_AS(communicator.barrier(), ngemb::communication_error);  // NOLINT: use after move, on purpose
  }
  CHECK_THROWS_AS(ngemb::nccl_communicator(ncclUniqueId{}, 1, 1, test_timeout), ngemb::invalid_argument);
  NGEMB_CUDA_CHECK(cudaStreamDestroy(stream));
}
#endif
