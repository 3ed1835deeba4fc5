// policy/ on the device: a device_policy built as device_policy{}.on(stream).with(resource) takes every buffer of
// a whole model (built, run, saved, loaded and run again) from that resource on that stream, and none goes around
// it through the default resource; a resource out of memory is ngemb::out_of_memory.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../../examples/demo_model.hpp"
#include "ngemb/cuda/error.cuh"
#include "ngemb/policy/device_policy.cuh"
#include "temp_folder.hpp"

namespace {

/// cudaMallocAsync behind a counter, never through default_device_resource.
class counting_device_resource {
 public:
  explicit counting_device_resource(cudaStream_t expected) : expected_(expected) {}

  void* allocate_async(std::size_t bytes, std::size_t /*alignment*/, cudaStream_t stream) {
    ++allocations;
    live_bytes += bytes;
    other_streams += stream != expected_;
    void* memory = nullptr;
    NGEMB_CUDA_CHECK(cudaMallocAsync(&memory, bytes, stream));
    return memory;
  }
  void deallocate_async(void* pointer, std::size_t bytes, std::size_t /*alignment*/, cudaStream_t stream) noexcept {
    live_bytes -= bytes;
    other_streams += stream != expected_;
    cudaFreeAsync(pointer, stream);
  }

  std::size_t allocations = 0;
  std::size_t live_bytes = 0;
  std::size_t other_streams = 0;

 private:
  cudaStream_t expected_;
};

}  // namespace

TEST_CASE("device: a policy's buffers come from its memory resource on its stream, and none go around it") {
  cudaStream_t stream = nullptr;
  NGEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  counting_device_resource counting(stream);
  const std::uint64_t defaults_before = ngemb::default_device_resource::allocation_count();
  {
    const ngemb::device_policy policy = ngemb::device_policy{}.on(stream).with(counting);
    CHECK(policy.stream == stream);
    CHECK(ngemb::get_memory_resource(policy) == ngemb::device_resource_ref(counting));
    const ngemb::model_config config = ngemb_examples::demo_config();
    const ngemb_test::temp_folder folder;
    auto model = ngemb_examples::random_model(policy, config, 11);
    const std::vector<std::vector<std::int32_t>> prompts{{5, 17, 42, 9}, {300}};
    ngemb::generation_options options;
    options.max_new_tokens = 4;
    const auto generated = ngemb::generate(policy, model, prompts, options).tokens;
    model.save(policy, folder / "model");
    auto loaded = ngemb_examples::demo_model<ngemb::device_policy>::load(policy, folder / "model");
    CHECK(ngemb::generate(policy, loaded, prompts, options).tokens == generated);
    CHECK(counting.live_bytes > 0);
  }
  NGEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
  NGEMB_CUDA_CHECK(cudaStreamDestroy(stream));
  CHECK(counting.allocations > 0);
  CHECK(counting.live_bytes == 0);
  CHECK(counting.other_streams == 0);
  CHECK(ngemb::default_device_resource::allocation_count() == defaults_before);
  // The default resource does count: one buffer moves it by one.
  { const ngemb::device_buffer<float> buffer(ngemb::device_policy{}, 3); }
  CHECK(ngemb::default_device_resource::allocation_count() == defaults_before + 1);
}

TEST_CASE("device: memory that is not there is out_of_memory, through the default resource") {
  CHECK_THROWS_WITH_AS(ngemb::device_buffer<std::byte>(ngemb::device_policy{}, std::size_t{1} << 50),
                       doctest::Contains("device_buffer: cannot allocate 1125899906842624 bytes"),
                       ngemb::out_of_memory);
  const ngemb::device_buffer<float> after(ngemb::device_policy{}, 16);  // the failure left no sticky error
  ngemb::synchronize(ngemb::device_policy{});
  CHECK(after.size() == 16);
}
