// A rank that exits mid-sequence must end the others with communication_error within their timeout, never a hang.
// The last rank leaves with _exit (as a crash would: no MPI_Finalize) after a first collective succeeded on every
// rank; the others then start an all-to-all (or, in "lookup" mode, a sharded_store lookup, after one that worked)
// that cannot complete. Each survivor prints "rank r: communication_error after X s: <what>", which ctest matches
// (tests/CMakeLists.txt; mpirun needs --enable-recovery, or it kills the survivors as soon as a rank exits).
// Usage: test_comm_dead_rank [timeout in ms, default 2000] [lookup]
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "ngemb/comm/mpi_communicator.hpp"
#include "ngemb/store/sharded_store.hpp"
#include "ngemb/store/table_store.hpp"

namespace {

using sharded = ngemb::sharded_store<ngemb::table_store<float>, ngemb::mpi_communicator>;

/// A small sharded store (T = 6 sub-tables of d = 2) whose rows are their own global numbers.
sharded small_store(const ngemb::mpi_communicator& communicator) {
  ngemb::ngram_config config;
  config.vocab_size = 19;
  config.hidden_size = 12;
  config.max_order = 3;
  config.splits = 3;
  config.m_base = 23;
  const std::vector<ngemb::row_range> ranges = sharded::ranges_of(config, communicator.rank(), communicator.size());
  ngemb::table_store<float> local(ngemb::host_policy{}, config, ranges, false);
  for (int table = 0; table < config.num_tables(); ++table) {
    const ngemb::view<float> rows = local.table(table);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      rows[i] = static_cast<float>(1000 * table + ranges[static_cast<std::size_t>(table)].first * 2 +
                                   static_cast<std::int64_t>(i));
    }
  }
  return sharded(config, std::move(local), communicator, {.lookup = ngemb::sharded_lookup::all_to_all});
}

}  // namespace

int main(int argc, char** argv) {
  ngemb::mpi_session mpi(&argc, &argv);
  const std::chrono::milliseconds timeout{argc > 1 ? std::stoll(argv[1]) : 2000};
  const bool lookup = argc > 2 && std::string(argv[2]) == "lookup";
  ngemb::mpi_communicator communicator(MPI_COMM_WORLD, timeout);
  const auto ranks = static_cast<std::size_t>(communicator.size());
  // Token ids 0..3 of every sub-table: some rows of each rank's shard.
  std::vector<std::uint32_t> ids(4 * 6);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<std::uint32_t>(i / 6 + 5 * (i % 6));
  }
  std::vector<float> gathered(4 * 6 * 2);
  sharded store = small_store(communicator);
  if (lookup) {
    store.lookup(ngemb::host_policy{}, ngemb::view<const std::uint32_t>(ids), 4, ngemb::view<float>(gathered));
  } else {
    communicator.barrier();
  }
  if (communicator.rank() == communicator.size() - 1) {
    _exit(0);
  }
  const std::vector<float> send(ranks, 1.0f);
  std::vector<float> receive(ranks);
  const std::vector<std::size_t> counts(ranks, 1);
  const auto start = std::chrono::steady_clock::now();
  try {
    if (lookup) {
      store.lookup(ngemb::host_policy{}, ngemb::view<const std::uint32_t>(ids), 4, ngemb::view<float>(gathered));
    } else {
      communicator.all_to_all_v<float>({}, send, counts, ngemb::view<float>(receive), counts);
    }
    std::printf("rank %d: no error raised although rank %zu exited\n", communicator.rank(), ranks - 1);
  } catch (const ngemb::communication_error& error) {
    const std::chrono::duration<double> waited = std::chrono::steady_clock::now() - start;
    std::printf("rank %d: communication_error after %.1f s: %s\n", communicator.rank(), waited.count(), error.what());
  }
  std::fflush(stdout);
  // No MPI_Finalize: it synchronises with every rank, the dead one included, and the failed collective's request can
  // be neither completed nor freed. Leave as the dead rank did.
  _exit(0);
}
