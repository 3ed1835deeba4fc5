// Device throughput of one LongCat-Flash-Lite MoE layer forward under device_policy, for the same layer, naive
// baseline and floor accounting as bench/moe.cpp (moe_setup.hpp), at decode batches 1, 16, 64 and a 2048-token
// prefill. Per batch {batch} (moe::forward, timed end to end: its one read-back of the per-expert row counts
// synchronises and counts) and {batch}_naive. Times come from cudaEvents on the policy's stream (manual time); the
// naive median and the floor's bandwidth (a 1 GiB device-to-device cudaMemcpyAsync, read + write bytes) are taken
// in the same process at setup. Skips with a message when no device is present.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "ngemb/policy/device_policy.cuh"
#include "stream_timer.cuh"

#include "device_floor.cuh"
#include "embedding_setup.hpp"
#include "moe_setup.hpp"

namespace {

constexpr ngemb_bench::moe_batch batches[] = {
    {"decode_1", 1}, {"decode_16", 16}, {"decode_64", 64}, {"prefill_2048", 2048}};

using layer_type = ngemb::moe<ngemb::softmax_router<ngemb::device_policy>, ngemb::bf16>;

struct batch_state {
  std::size_t tokens;
  ngemb::device_buffer<float> x;
  ngemb::device_buffer<float> y;
  double floor_bytes = 0;
  double naive_seconds = 0;
};

class device_state {
 public:
  device_state() : batches_(std::size(batches)) {
    NGEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    policy_ = ngemb::device_policy{stream_};
    bandwidth_ = ngemb_bench::device_memcpy_floor(stream_, timer_).bandwidth();  // freed before the weights come
    const ngemb_bench::lite_weights weights(ngemb::host_policy{0});
    layer_ = std::make_unique<layer_type>(weights.layer(policy_));
    gate_ = ngemb::upload(policy_, ngemb::view<const ngemb::bf16>(weights.gate));
    up_ = ngemb::upload(policy_, ngemb::view<const ngemb::bf16>(weights.up));
    down_ = ngemb::upload(policy_, ngemb::view<const ngemb::bf16>(weights.down));
    naive_ = std::make_unique<ngemb_bench::naive_moe<ngemb::device_policy>>(
        policy_, weights.router(policy_), gate_.as_view(), up_.as_view(), down_.as_view());
  }

  device_state(const device_state&) = delete;
  device_state& operator=(const device_state&) = delete;
  ~device_state() {
    batches_.clear();  // stream-ordered buffers go before their stream
    naive_.reset();
    layer_.reset();
    gate_ = {};
    up_ = {};
    down_ = {};
    cudaStreamSynchronize(stream_);  // failures cannot be reported from a destructor
    cudaStreamDestroy(stream_);
  }

  batch_state& batch_at(std::size_t index) {
    if (!batches_[index]) {
      const std::size_t tokens = batches[index].tokens;
      auto batch = std::make_unique<batch_state>();
      batch->tokens = tokens;
      batch->x = ngemb::device_buffer<float>(policy_, tokens * ngemb_bench::moe_hidden);
      batch->y = ngemb::device_buffer<float>(policy_, tokens * ngemb_bench::moe_hidden);
      ngemb::for_each_n(policy_, batch->x.size(),
                        ngemb_bench::fill_noise_op<float>{batch->x.data(), 1000 + tokens, std::sqrt(3.0f)});
      run(*batch, false);
      batch->floor_bytes = ngemb_bench::distinct_expert_bytes(layer_->last_routing(policy_));
      batch->naive_seconds = ngemb_bench::median_seconds([&](long calls) {
        return timer_.seconds(stream_, [&] { run(*batch, true); }, calls);
      });
      batches_[index] = std::move(batch);
    }
    return *batches_[index];
  }

  void run(batch_state& batch, bool naive) {
    const ngemb::view<const float> x = batch.x.as_view();
    if (naive) {
      naive_->forward(policy_, batch.tokens, x, batch.y.as_view());
    } else {
      layer_->forward(policy_, batch.tokens, x, batch.y.as_view());
    }
  }

  [[nodiscard]] cudaStream_t stream() const { return stream_; }
  [[nodiscard]] ngemb_bench::stream_timer& timer() { return timer_; }
  [[nodiscard]] double bandwidth() const { return bandwidth_; }

 private:
  cudaStream_t stream_ = nullptr;
  ngemb_bench::stream_timer timer_;
  ngemb::device_policy policy_;
  double bandwidth_ = 0;
  std::unique_ptr<layer_type> layer_;
  ngemb::device_buffer<ngemb::bf16> gate_;
  ngemb::device_buffer<ngemb::bf16> up_;
  ngemb::device_buffer<ngemb::bf16> down_;
  std::unique_ptr<ngemb_bench::naive_moe<ngemb::device_policy>> naive_;
  std::vector<std::unique_ptr<batch_state>> batches_;
};

std::unique_ptr<device_state> device;

device_state& device_at() {
  if (!device) {
    device = std::make_unique<device_state>();
  }
  return *device;
}

void run_batch(benchmark::State& bench, std::size_t index, bool naive) {
  device_state& gpu = device_at();
  batch_state& batch = gpu.batch_at(index);
  double total = 0;
  for (auto _ : bench) {
    const double seconds = gpu.timer().seconds(gpu.stream(), [&] { gpu.run(batch, naive); });
    bench.SetIterationTime(seconds);
    total += seconds;
  }
  const double per_iteration = total / static_cast<double>(bench.iterations());
  bench.counters["tokens_per_second"] = benchmark::Counter(static_cast<double>(batch.tokens) / per_iteration);
  bench.counters["vs_naive"] = benchmark::Counter(batch.naive_seconds / per_iteration);
  bench.counters["vs_floor"] = benchmark::Counter(per_iteration / (batch.floor_bytes / gpu.bandwidth()));
  bench.counters["expert_GB"] = benchmark::Counter(batch.floor_bytes / 1e9);
  bench.counters["GB_per_s_floor"] = benchmark::Counter(gpu.bandwidth() / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  // Built whenever nvcc exists, so it must also run (and pass) on machines without a GPU.
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping device benchmarks\n");
    return 0;
  }
  for (std::size_t index = 0; index < std::size(batches); ++index) {
    for (const bool naive : {false, true}) {
      const std::string name = std::string("BM_device_moe_lite_") + batches[index].name + (naive ? "_naive" : "");
      benchmark::RegisterBenchmark(name.c_str(),
                                   [index, naive](benchmark::State& bench) { run_batch(bench, index, naive); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  device.reset();
  return 0;
}
