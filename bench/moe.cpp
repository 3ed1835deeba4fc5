// Host throughput of one LongCat-Flash-Lite MoE layer forward (moe_setup.hpp: shape, bf16 weights, naive baseline,
// floor accounting) under ngemb::host_policy{0} (all hardware threads), at decode batches 1, 16, 64 and a prefill.
// Per batch two benchmarks:
//   {batch}        the library's moe::forward (route, dispatch by expert, one gate/up and one down GEMM per active
//                  expert, combine),
//   {batch}_naive  the naive per-token loop over the chosen experts.
// Counters: tokens_per_second; vs_naive = naive time / library time (the naive median taken at setup);
// vs_floor = library time / (distinct chosen experts' weight bytes / memory bandwidth), the bandwidth from a
// 1 GiB std::memcpy split over the same threads, counting read + write bytes, measured in the same run;
// GFLOP_per_s = the expert FFNs' flops, 2 x 3 x H x I per routed (token, pick) pair (gate, up and down products;
// zero-expert picks cost none), over the time.
// The prefill is 256 tokens here, not the 2048 of the device benchmark: at 2048 the naive loop reads ~16k expert
// FFNs (300 GB) per call, minutes on a 2-core host; 256 tokens already activate every expert (~2000 routed picks
// over 256 experts) and keep the whole program near a minute. Large batches run a fixed number of iterations.
// Memory: the layer keeps its own 4.8 GB copy of the weights and the naive path reads the 4.8 GB host arrays it was
// built from, so about 10 GB of RAM.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

#include "ngemb/policy/host_policy.hpp"

#include "host_timing.hpp"
#include "moe_setup.hpp"

namespace {

using ngemb_bench::clock_type;
using ngemb_bench::seconds_since;
using ngemb_bench::time_calls;

const ngemb::host_policy all_threads{0};

constexpr ngemb_bench::moe_batch batches[] = {{"decode_1", 1}, {"decode_16", 16}, {"decode_64", 64}, {"prefill_256", 256}};

struct layer_state {
  double bandwidth = ngemb_bench::memcpy_floor(all_threads).bandwidth();  // first, before the weights take most of the memory
  ngemb_bench::lite_weights weights{all_threads};
  ngemb::moe<ngemb::softmax_router<>, ngemb::bf16> layer = weights.layer(all_threads);
  ngemb_bench::naive_moe<ngemb::host_policy> naive{all_threads, weights.router(all_threads),
                                                   ngemb::view<const ngemb::bf16>(weights.gate),
                                                   ngemb::view<const ngemb::bf16>(weights.up),
                                                   ngemb::view<const ngemb::bf16>(weights.down)};
};

layer_state& state() {
  static layer_state built;
  return built;
}

struct batch_state {
  std::size_t tokens;
  std::vector<float> x;
  std::vector<float> y;
  double floor_bytes = 0;
  double expert_flops = 0;
  double naive_seconds = 0;

  explicit batch_state(std::size_t batch_tokens)
      : tokens(batch_tokens), x(tokens * ngemb_bench::moe_hidden), y(x.size()) {
    // Uniform in [-sqrt(3), sqrt(3)): unit variance, like the normed hidden states the layer reads.
    ngemb::for_each_n(all_threads, x.size(), ngemb_bench::fill_noise_op<float>{x.data(), 1000 + tokens, std::sqrt(3.0f)});
    run_library();
    const ngemb::routing_statistics routing = state().layer.last_routing(all_threads);
    floor_bytes = ngemb_bench::distinct_expert_bytes(routing);
    expert_flops = ngemb_bench::expert_flops(routing);
    auto naive = [this] { run_naive(); };
    naive_seconds = ngemb_bench::median_seconds([&naive](long calls) { return time_calls(naive, calls); });
  }

  void run_library() {
    state().layer.forward(all_threads, tokens, ngemb::view<const float>(x), ngemb::view<float>(y));
  }
  void run_naive() { state().naive.forward(all_threads, tokens, ngemb::view<const float>(x), ngemb::view<float>(y)); }
};

batch_state& batch_at(std::size_t index) {
  static std::vector<std::unique_ptr<batch_state>> states(std::size(batches));
  if (!states[index]) {
    states[index] = std::make_unique<batch_state>(batches[index].tokens);
  }
  return *states[index];
}

void run_batch(benchmark::State& bench, std::size_t index, bool naive) {
  batch_state& batch = batch_at(index);
  const auto start = clock_type::now();
  for (auto _ : bench) {
    naive ? batch.run_naive() : batch.run_library();
    benchmark::ClobberMemory();
  }
  const double per_iteration = seconds_since(start) / static_cast<double>(bench.iterations());
  bench.counters["tokens_per_second"] =
      benchmark::Counter(static_cast<double>(batch.tokens), benchmark::Counter::kIsIterationInvariantRate);
  bench.counters["vs_naive"] = benchmark::Counter(batch.naive_seconds / per_iteration);
  bench.counters["vs_floor"] = benchmark::Counter(per_iteration / (batch.floor_bytes / state().bandwidth));
  bench.counters["GFLOP_per_s"] = benchmark::Counter(batch.expert_flops / per_iteration / 1e9);
  bench.counters["expert_GB"] = benchmark::Counter(batch.floor_bytes / 1e9);
  bench.counters["GB_per_s_floor"] = benchmark::Counter(state().bandwidth / 1e9);
  bench.counters["threads"] = benchmark::Counter(static_cast<double>(all_threads.resolved_threads()));
}

}  // namespace

int main(int argc, char** argv) {
  for (std::size_t index = 0; index < std::size(batches); ++index) {
    for (const bool naive : {false, true}) {
      const std::string name = std::string("BM_moe_lite_") + batches[index].name + (naive ? "_naive" : "");
      auto* registered = benchmark::RegisterBenchmark(
          name.c_str(), [index, naive](benchmark::State& bench) { run_batch(bench, index, naive); });
      registered->UseRealTime()->Unit(benchmark::kMillisecond);
      if (batches[index].tokens >= 64) {  // a second or more per call (see the top)
        registered->Iterations(naive ? 1 : 3);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
