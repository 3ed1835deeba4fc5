// doctest main for device tests: skips (exit 77) with a message when no GPU is visible.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cuda_runtime_api.h>
#include <doctest/doctest.h>

#include <cstdio>

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping device tests\n");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
