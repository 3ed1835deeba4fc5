// doctest main for programs run under mpirun: every rank runs every case (the cases call collectives, so all ranks
// must run the same ones in the same order), rank 0 reports in full and the others only their failures, and the
// program fails on every rank when any rank failed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <mpi.h>

#include "ngemb/comm/mpi_communicator.hpp"

int main(int argc, char** argv) {
  ngemb::mpi_session mpi(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  doctest::Context context(argc, argv);
  if (rank != 0) {
    context.setOption("minimal", true);
  }
  const int failed = context.run() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return any_failed;
}
