// The device package consumer: hashes {5, 7} with the LongCat-Flash-Lite config on a CUDA stream and checks the
// table-0 id of token 7, (7 + 5 * 131072) mod 10223617 = 655367, as the host consumer does. Without a GPU it
// exits 77 (skipped) after compiling and linking, which is what the package test proves on a machine without one.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string_view>
#include <vector>

#include <ngemb/ngemb.hpp>
#include <ngemb/policy/device_policy.cuh>

int main() {
  if (std::string_view(NGEMB_VERSION_STRING) != NGEMB_EXPECTED_VERSION) {
    std::printf("ngemb cuda consumer: ngemb/version.hpp says %s, expected %s\n", NGEMB_VERSION_STRING,
                NGEMB_EXPECTED_VERSION);
    return 1;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("ngemb cuda consumer: built; no CUDA device, so not run\n");
    return 77;
  }
  try {
    cudaStream_t stream = nullptr;
    NGEMB_CUDA_CHECK(cudaStreamCreate(&stream));
    const ngemb::device_policy policy{stream};
    const ngemb::longcat_hash hasher(ngemb::ngram_config::longcat_flash_lite());
    const std::vector<std::int32_t> tokens{5, 7};
    const std::vector<std::int64_t> offsets{0, 2};
    const auto device_tokens = ngemb::upload(policy, ngemb::view<const std::int32_t>(tokens));
    const auto device_offsets = ngemb::upload(policy, ngemb::view<const std::int64_t>(offsets));
    ngemb::device_policy::buffer<std::int64_t> device_ids(policy, tokens.size() * 12);
    ngemb::hash_tokens(policy, hasher,
                       ngemb::ragged_view<const std::int32_t>(device_tokens.as_view(), device_offsets.as_view()),
                       device_ids.as_view());
    std::vector<std::int64_t> ids(tokens.size() * 12);
    ngemb::copy_to_host(policy, ngemb::view<const std::int64_t>(device_ids.as_view()), ngemb::view<std::int64_t>(ids));
    NGEMB_CUDA_CHECK(cudaStreamDestroy(stream));
    const std::int64_t expected = 655367;
    std::printf("ngemb cuda consumer (ngemb %s): id(token 7, table 0) = %lld, expected %lld\n", NGEMB_VERSION_STRING,
                static_cast<long long>(ids[12]), static_cast<long long>(expected));
    return ids[12] == expected ? 0 : 1;
  } catch (const std::exception& error) {
    std::printf("ngemb cuda consumer: exception: %s\n", error.what());
    return 2;
  }
}
