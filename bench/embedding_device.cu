// Device throughput of the n-gram embedding forward under device_policy (cuBLAS for the GEMMs), for the same shapes,
// tables, batches, naive path and byte accounting as bench/embedding.cpp (all in embedding_setup.hpp). Per shape:
//   {shape}         the library's forward (hash + fused embed), timed end to end: its host-side input checks (a
//                   read-back that synchronises) count,
//   {shape}_bf16    the same with bf16 W_cat (the warp-per-row kernel of cuda/mixed_gemm.cuh up to 8 rows),
//   {shape}_fp8     the same with block-scaled fp8 W_cat (cuda/fp8_gemm.cuh),
//   {shape}_naive   the naive path (the official module op by op: T gathers, T cuBLAS GEMMs, T adds, then the base),
//   {shape}_gather  the library's gather step alone (detail::gather_rows_op through for_each_n, as embed_hashed
//                   runs it); its vs_naive compares with the naive path's T separate gathers.
// Times come from cudaEvents on the policy's stream around each iteration (manual time). Baselines timed in the same
// process at setup, by their median: the naive path (and its gathers alone), and the floor: a 1 GiB device-to-device
// cudaMemcpyAsync, whose bandwidth counts read + write bytes (embedding_setup.hpp).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <memory>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "stream_timer.cuh"

#include "device_floor.cuh"
#include "embedding_setup.hpp"

namespace {

using ngemb_bench::variant;

/// One shape's workload and the medians of its naive baselines.
struct shape_state {
  ngemb_bench::workload<ngemb::device_policy> work;
  double naive_seconds = 0;
  double naive_gather_seconds = 0;
};

/// The stream, its timing events, the floor's buffers, the model and the shapes, built on first use and destroyed
/// explicitly at the end of main, while the CUDA context is still alive.
class device_state {
 public:
  static constexpr std::size_t floor_bytes = ngemb_bench::device_memcpy_floor::bytes;

  device_state() : shapes_(ngemb_bench::shapes.size()) {
    NGEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    policy_ = ngemb::device_policy{stream_};
    floor_ = std::make_unique<ngemb_bench::device_memcpy_floor>(stream_, timer_);
    model_ = std::make_unique<ngemb_bench::model<ngemb::device_policy>>(policy_);
  }

  device_state(const device_state&) = delete;
  device_state& operator=(const device_state&) = delete;
  ~device_state() {
    shapes_.clear();  // stream-ordered buffers go before their stream
    model_.reset();
    cudaStreamSynchronize(stream_);  // failures cannot be reported from a destructor
    cudaStreamDestroy(stream_);
  }

  shape_state& shape_at(std::size_t index) {
    if (!shapes_[index]) {
      auto state = std::unique_ptr<shape_state>(new shape_state{
          ngemb_bench::workload<ngemb::device_policy>(policy_, *model_, ngemb_bench::shapes[index],
                                                      2024 + static_cast<unsigned>(index))});
      auto& work = state->work;
      auto naive = [&work] { work.run_naive(); };
      auto naive_gather = [&work] { work.run_naive_gather(); };
      state->naive_seconds = ngemb_bench::median_seconds([this, &naive](long calls) { return time_on_stream(naive, calls); });
      state->naive_gather_seconds =
          ngemb_bench::median_seconds([this, &naive_gather](long calls) { return time_on_stream(naive_gather, calls); });
      shapes_[index] = std::move(state);
    }
    return *shapes_[index];
  }

  void run_floor() { floor_->copy(); }

  /// Seconds `calls` calls of `run` take on the stream, between two events.
  template <class Run>
  double time_on_stream(Run& run, long calls) {
    return timer_.seconds(stream_, run, calls);
  }

  /// Bytes per second, read + write.
  [[nodiscard]] double bandwidth() const { return floor_->bandwidth(); }

 private:
  cudaStream_t stream_ = nullptr;
  ngemb_bench::stream_timer timer_;
  ngemb::device_policy policy_;
  std::unique_ptr<ngemb_bench::device_memcpy_floor> floor_;
  std::unique_ptr<ngemb_bench::model<ngemb::device_policy>> model_;
  std::vector<std::unique_ptr<shape_state>> shapes_;
};

std::unique_ptr<device_state> device;

device_state& device_at() {
  if (!device) {
    device = std::make_unique<device_state>();
  }
  return *device;
}

/// Each iteration is bracketed by events on the stream; the same per-iteration times feed the ratio counters.
void run_shape(benchmark::State& state, std::size_t index, variant kind) {
  try {
    device_state& gpu = device_at();
    shape_state& shape = gpu.shape_at(index);
    auto& work = shape.work;
    auto run = [&work, kind] { ngemb_bench::run_once(work, kind); };
    double total = 0;
    for (auto _ : state) {
      const double seconds = gpu.time_on_stream(run, 1);
      state.SetIterationTime(seconds);
      total += seconds;
    }
    const double per_iteration = total / static_cast<double>(state.iterations());
    ngemb_bench::set_counters(state, static_cast<double>(work.tokens()), ngemb_bench::bytes_per_token(work, kind),
                              per_iteration, kind == variant::gather ? shape.naive_gather_seconds : shape.naive_seconds,
                              gpu.bandwidth());
  } catch (const ngemb::error& failure) {  // CUDA failures and library errors end this benchmark, not the run
    state.SkipWithError(failure.what());
  }
}

void BM_device_memcpy_floor_1GiB(benchmark::State& state) {
  try {
    device_state& gpu = device_at();
    auto copy = [&gpu] { gpu.run_floor(); };
    double total = 0;
    for (auto _ : state) {
      const double seconds = gpu.time_on_stream(copy, 1);
      state.SetIterationTime(seconds);
      total += seconds;
    }
    const double per_iteration = total / static_cast<double>(state.iterations());
    state.counters["GB_per_s_setup"] = benchmark::Counter(gpu.bandwidth() / 1e9);  // the floor's bandwidth
    state.counters["GB_per_s"] = benchmark::Counter(2.0 * device_state::floor_bytes / per_iteration / 1e9);
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(2 * device_state::floor_bytes));
  } catch (const ngemb::error& failure) {
    state.SkipWithError(failure.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Built whenever nvcc exists, so it must also run (and pass) on machines without a GPU.
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping device benchmarks\n");
    return 0;
  }
  benchmark::RegisterBenchmark("BM_device_memcpy_floor_1GiB", BM_device_memcpy_floor_1GiB)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  ngemb_bench::register_shapes("BM_device_", run_shape,
                               [](benchmark::internal::Benchmark* registered, const ngemb_bench::shape_spec& /*shape*/,
                                  variant /*kind*/) { registered->UseManualTime()->Unit(benchmark::kMicrosecond); });
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  device.reset();
  return 0;
}
