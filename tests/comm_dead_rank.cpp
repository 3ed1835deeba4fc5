// A rank that exits mid-sequence must end the others with communication_error within their timeout, never a hang.
// The last rank leaves with _exit (as a crash would: no MPI_Finalize) after a first collective succeeded on every
// rank; the others then start an all-to-all that cannot complete. Each survivor prints
// "rank r: communication_error after X s: <what>", which ctest matches (tests/CMakeLists.txt; mpirun needs
// --enable-recovery, or it kills the survivors as soon as a rank exits).
// Usage: test_comm_dead_rank [timeout in ms, default 2000]
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "ngemb/comm/mpi_communicator.hpp"

int main(int argc, char** argv) {
  ngemb::mpi_session mpi(&argc, &argv);
  const std::chrono::milliseconds timeout{argc > 1 ? std::stoll(argv[1]) : 2000};
  ngemb::mpi_communicator communicator(MPI_COMM_WORLD, timeout);
  communicator.barrier();
  if (communicator.rank() == communicator.size() - 1) {
    _exit(0);
  }
  const auto ranks = static_cast<std::size_t>(communicator.size());
  const std::vector<float> send(ranks, 1.0f);
  std::vector<float> receive(ranks);
  const std::vector<std::size_t> counts(ranks, 1);
  const auto start = std::chrono::steady_clock::now();
  try {
    communicator.all_to_all_v<float>({}, send, counts, ngemb::view<float>(receive), counts);
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
