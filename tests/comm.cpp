// comm/: every collective of mpi_communicator and self_communicator against what each rank computes on its own
// (comm_patterns.hpp regenerates any peer's data from the peer's seed), for every element type, with ragged and empty
// blocks; counters against the bytes the calls moved; and arguments that disagree throw before anything is sent.
// Runs under mpirun with 1 to 4 ranks (tests/CMakeLists.txt). self_communicator's cases live here, not in a plain
// host test: it is the one-rank case of the same contract, so the same generic checks run over both backends, and
// the comm folder keeps one test file.
#include <doctest/doctest.h>
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <type_traits>
#include <vector>

#include "comm_patterns.hpp"
#include "ngemb/comm/mpi_communicator.hpp"
#include "ngemb/comm/self_communicator.hpp"

namespace {

// Short enough that ranks which fell out of step fail a case, instead of running into ctest's timeout.
constexpr std::chrono::milliseconds test_timeout{20'000};

ngemb::mpi_communicator world() { return ngemb::mpi_communicator(MPI_COMM_WORLD, test_timeout); }

template <class T>
void check_all_to_all_v(auto& communicator) {
  const int rank = communicator.rank();
  const int ranks = communicator.size();
  const ngemb::host_policy policy;
  for (int round = 0; round < comm_patterns::rounds; ++round) {
    CAPTURE(round);
    const std::vector<std::size_t> send_counts = comm_patterns::counts(rank, ranks, round, true);
    const std::vector<std::size_t> receive_counts = comm_patterns::counts(rank, ranks, round, false);
    const std::vector<T> send = comm_patterns::blocks<T>(rank, ranks, round, true);
    const std::vector<T> expected = comm_patterns::blocks<T>(rank, ranks, round, false);
    std::vector<T> received(expected.size());  // zeros, which no sent value is
    const ngemb::communication_counters before = communicator.counters();
    communicator.template all_to_all_v<T>(policy, send, send_counts, ngemb::view<T>(received), receive_counts);
    CHECK(received == expected);  // bit for bit: nothing but copies
    const ngemb::communication_counters after = communicator.counters();
    const auto own = static_cast<std::size_t>(rank);
    const std::size_t sent = std::accumulate(send_counts.begin(), send_counts.end(), std::size_t{0}) - send_counts[own];
    const std::size_t got =
        std::accumulate(receive_counts.begin(), receive_counts.end(), std::size_t{0}) - receive_counts[own];
    CHECK(after.bytes_sent - before.bytes_sent == sent * sizeof(T));
    CHECK(after.bytes_received - before.bytes_received == got * sizeof(T));
    CHECK(after.collectives - before.collectives == 1);
  }
}

/// Every rank holds the same bits after an all-reduce: the elementwise minimum and maximum over ranks agree.
template <class T>
bool same_on_every_rank(const std::vector<T>& values) {
  int ranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (ranks == 1 || values.empty()) {
    return true;
  }
  const MPI_Datatype type = std::is_same_v<T, float> ? MPI_FLOAT : MPI_DOUBLE;
  const auto count = static_cast<int>(values.size());
  std::vector<T> low(values.size());
  std::vector<T> high(values.size());
  MPI_Allreduce(values.data(), low.data(), count, type, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(values.data(), high.data(), count, type, MPI_MAX, MPI_COMM_WORLD);
  return low == high && low == values;
}

template <class T>
void check_close(const std::vector<T>& values, const comm_patterns::reference& expected) {
  REQUIRE(values.size() == expected.sum.size());
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!(std::abs(static_cast<double>(values[i]) - expected.sum[i]) <= expected.tolerance[i])) {
      ++wrong;
    }
  }
  CHECK(wrong == 0);
}

template <class T>
void check_all_reduce_sum(auto& communicator) {
  const int rank = communicator.rank();
  const int ranks = communicator.size();
  for (const std::size_t size : comm_patterns::sum_sizes) {
    CAPTURE(size);
    std::vector<T> data = comm_patterns::block<T>(rank, 0, 0, size);
    const ngemb::communication_counters before = communicator.counters();
    communicator.all_reduce_sum(ngemb::host_policy{}, ngemb::view<T>(data));
    check_close(data, comm_patterns::reference_sum<T>(ranks, 0, 0, size));
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(communicator)>, ngemb::mpi_communicator>) {
      CHECK(same_on_every_rank(data));
    }
    const ngemb::communication_counters after = communicator.counters();
    // 2 (P-1)/P of the data each way (comm/detail/collectives.hpp), rounded down.
    const auto peers = static_cast<std::size_t>(ranks - 1);
    const std::size_t bytes = 2 * peers * size * sizeof(T) / static_cast<std::size_t>(ranks);
    CHECK(after.bytes_sent - before.bytes_sent == bytes);
    CHECK(after.bytes_received - before.bytes_received == bytes);
    CHECK(after.collectives - before.collectives == 1);
  }
}

template <class T>
void check_reduce_scatter_sum(auto& communicator) {
  const int rank = communicator.rank();
  const int ranks = communicator.size();
  for (const std::size_t size : comm_patterns::sum_sizes) {
    CAPTURE(size);
    std::vector<T> in;
    for (int column = 0; column < ranks; ++column) {
      const std::vector<T> part = comm_patterns::block<T>(rank, column, 1, size);
      in.insert(in.end(), part.begin(), part.end());
    }
    std::vector<T> out(size, T(7));
    const ngemb::communication_counters before = communicator.counters();
    communicator.template reduce_scatter_sum<T>(ngemb::host_policy{}, in, ngemb::view<T>(out));
    check_close(out, comm_patterns::reference_sum<T>(ranks, rank, 1, size));
    const ngemb::communication_counters after = communicator.counters();
    CHECK(after.bytes_sent - before.bytes_sent == static_cast<std::size_t>(ranks - 1) * size * sizeof(T));
    CHECK(after.bytes_received - before.bytes_received == static_cast<std::size_t>(ranks - 1) * size * sizeof(T));
    CHECK(after.collectives - before.collectives == 1);
  }
}

void check_exchange_counts_and_barrier(auto& communicator) {
  const int rank = communicator.rank();
  const int ranks = communicator.size();
  std::vector<std::size_t> send(static_cast<std::size_t>(ranks));
  for (int peer = 0; peer < ranks; ++peer) {
    send[static_cast<std::size_t>(peer)] = 1000 * static_cast<std::size_t>(rank) + static_cast<std::size_t>(peer) + 1;
  }
  std::vector<std::size_t> received(send.size(), 0);
  communicator.reset_counters();
  communicator.exchange_counts(send, received);
  for (int peer = 0; peer < ranks; ++peer) {
    CHECK(received[static_cast<std::size_t>(peer)] ==
          1000 * static_cast<std::size_t>(peer) + static_cast<std::size_t>(rank) + 1);
  }
  const std::uint64_t count_bytes = (send.size() - 1) * sizeof(std::size_t);  // every count but its own
  CHECK(communicator.counters().bytes_sent == count_bytes);
  CHECK(communicator.counters().bytes_received == count_bytes);
  communicator.barrier();
  CHECK(communicator.counters().bytes_sent == count_bytes);
  CHECK(communicator.counters().collectives == 2);
  communicator.reset_counters();
  CHECK(communicator.counters().collectives == 0);
}

/// Arguments that disagree with the communicator's size or with the buffers throw shape_mismatch on the caller,
/// before anything is sent (every rank makes the same mistake here, so none waits for the others).
void check_mismatches_throw(auto& communicator) {
  const auto ranks = static_cast<std::size_t>(communicator.size());
  const ngemb::host_policy policy;
  std::vector<float> send(ranks, 1.0f);
  std::vector<float> receive(ranks, 0.0f);
  const std::vector<std::size_t> ones(ranks, 1);
  const std::vector<std::size_t> one_too_many(ranks + 1, 1);
  std::vector<std::size_t> twos(ranks, 2);
  communicator.reset_counters();
  CHECK_THROWS_AS(
      communicator.template all_to_all_v<float>(policy, send, one_too_many, ngemb::view<float>(receive), ones),
      ngemb::shape_mismatch);
  CHECK_THROWS_AS(communicator.template all_to_all_v<float>(policy, send, ones, ngemb::view<float>(receive), twos),
                  ngemb::shape_mismatch);
  CHECK_THROWS_WITH_AS(communicator.template all_to_all_v<float>(policy, send, twos, ngemb::view<float>(receive), ones),
                       doctest::Contains("send_counts sum to"), ngemb::shape_mismatch);
  CHECK_THROWS_AS(communicator.exchange_counts(ones, std::span<std::size_t>(twos).first(ranks - 1)),
                  ngemb::shape_mismatch);
  std::vector<float> out(2);
  CHECK_THROWS_WITH_AS(communicator.template reduce_scatter_sum<float>(policy, send, ngemb::view<float>(out)),
                       doctest::Contains("blocks of out's 2"), ngemb::shape_mismatch);
  CHECK(communicator.counters().collectives == 0);
}

}  // namespace

TEST_CASE("comm: the communicators name their rank and size") {
  ngemb::mpi_communicator communicator = world();
  int rank = -1;
  int ranks = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  CHECK(communicator.rank() == rank);
  CHECK(communicator.size() == ranks);
  CHECK(communicator.timeout() == test_timeout);
  CHECK(communicator.native_handle() != MPI_COMM_WORLD);  // its own duplicate: never the user's traffic
  const ngemb::self_communicator<> self;
  CHECK(self.rank() == 0);
  CHECK(self.size() == 1);
  CHECK(self.timeout() == ngemb::default_communication_timeout);
}

TEST_CASE_TEMPLATE("comm: all_to_all_v moves ragged blocks bit for bit", T, std::uint32_t, std::int32_t, float, double,
                   ngemb::bf16, ngemb::fp16) {
  ngemb::mpi_communicator communicator = world();
  check_all_to_all_v<T>(communicator);
  ngemb::self_communicator<> self(test_timeout);
  check_all_to_all_v<T>(self);
}

TEST_CASE_TEMPLATE("comm: all_reduce_sum equals the fp64 sum within rounding", T, float, double) {
  ngemb::mpi_communicator communicator = world();
  check_all_reduce_sum<T>(communicator);
  ngemb::self_communicator<> self;
  check_all_reduce_sum<T>(self);
}

TEST_CASE_TEMPLATE("comm: reduce_scatter_sum gives each rank the sum of its block", T, float, double) {
  ngemb::mpi_communicator communicator = world();
  check_reduce_scatter_sum<T>(communicator);
  ngemb::self_communicator<> self;
  check_reduce_scatter_sum<T>(self);
}

TEST_CASE("comm: exchange_counts transposes the counts; barrier moves nothing") {
  ngemb::mpi_communicator communicator = world();
  check_exchange_counts_and_barrier(communicator);
  ngemb::self_communicator<> self;
  check_exchange_counts_and_barrier(self);
}

TEST_CASE("comm: arguments that disagree throw shape_mismatch before anything is sent") {
  ngemb::mpi_communicator communicator = world();
  check_mismatches_throw(communicator);
  ngemb::self_communicator<> self;
  check_mismatches_throw(self);
  // One rank: the block it sends itself must be the block it receives.
  std::vector<float> send(3, 1.0f);
  std::vector<float> receive(2);
  const std::vector<std::size_t> three{3};
  const std::vector<std::size_t> two{2};
  CHECK_THROWS_WITH_AS(self.all_to_all_v<float>({}, send, three, ngemb::view<float>(receive), two),
                       "all_to_all_v: rank 0 of 1 sends 3 elements to itself but receives 2", ngemb::shape_mismatch);
}

TEST_CASE("comm: MPI counts over INT_MAX throw invalid_argument instead of overflowing") {
  ngemb::mpi_communicator communicator = world();
  const auto ranks = static_cast<std::size_t>(communicator.size());
  const std::size_t huge = static_cast<std::size_t>(INT_MAX) + 1;
  // Views that claim more elements than exist: the checks throw before MPI (or anything) reads them.
  float anchor = 1.0f;
  CHECK_THROWS_WITH_AS(communicator.all_reduce_sum(ngemb::host_policy{}, ngemb::view<float>(&anchor, huge)),
                       "mpi_communicator: all_reduce_sum: data's size is 2147483648 elements, above MPI's int limit "
                       "2147483647",
                       ngemb::invalid_argument);
  std::vector<std::size_t> counts(ranks, 0);
  counts[0] = huge;
  const std::vector<std::size_t> zeros(ranks, 0);
  CHECK_THROWS_WITH_AS(communicator.all_to_all_v<float>({}, ngemb::view<const float>(&anchor, huge), counts,
                                                       ngemb::view<float>(), zeros),
                       "mpi_communicator: all_to_all_v: the send block of rank 0 has a count of 2147483648 elements, "
                       "above MPI's int limit 2147483647",
                       ngemb::invalid_argument);
  if (ranks >= 3) {  // blocks within the limit whose offsets are not
    counts[0] = INT_MAX;
    counts[1] = INT_MAX;
    CHECK_THROWS_WITH_AS(communicator.all_to_all_v<float>({}, ngemb::view<const float>(), zeros,
                                                         ngemb::view<float>(&anchor, 2 * huge - 2), counts),
                         "mpi_communicator: all_to_all_v: the receive block of rank 2 starts at 4294967294 elements, "
                         "above MPI's int limit 2147483647",
                         ngemb::invalid_argument);
  }
  CHECK(communicator.counters().collectives == 0);
}

TEST_CASE("comm: mpi_communicator copies share one duplicate; a parent other than the world works") {
  ngemb::mpi_communicator original = world();
  {
    const ngemb::mpi_communicator copy = original;  // NOLINT: the copy is the point
    CHECK(copy.native_handle() == original.native_handle());
  }
  original.barrier();  // still usable after the copy died
  // Even and odd ranks in two groups: each communicator spans only its group.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm halves = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &halves);
  {
    ngemb::mpi_communicator half(halves, test_timeout);
    int half_size = 0;
    MPI_Comm_size(halves, &half_size);
    CHECK(half.size() == half_size);
    CHECK(half.rank() == rank / 2);
    check_exchange_counts_and_barrier(half);
  }
  MPI_Comm_free(&halves);
}
