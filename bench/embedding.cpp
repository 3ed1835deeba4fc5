// Host throughput of the n-gram embedding forward (library: hash + fused gather/GEMM/combine) for the Lite shape
// with 1M-row bf16 tables, at decode batches 1, 16, 64, 256 and a 4 x 1024 prefill; see embedding_setup.hpp for the
// shape, the naive path, the batches and the byte accounting. Every path runs under ngemb::host_policy{0} (all
// hardware threads: the `threads` counter). Per shape five benchmarks:
//   {shape}         the library's forward (fp32 W_cat),
//   {shape}_bf16    the same with bf16 W_cat (fused_projection<float, host_policy, bf16>; same weight values),
//   {shape}_fp8     the same with block-scaled fp8 W_cat (the W_i quantised per 128 x 128 block),
//   {shape}_naive   the naive path (the official module op by op),
//   {shape}_gather  the library's gather step alone (detail::gather_rows_op through for_each_n, as embed_hashed
//                   runs it); its vs_naive compares with the naive path's T separate gathers.
// Baselines timed in the same process, at setup, by their median (median_seconds):
//   naive: the naive path (and its gathers alone, for the gather benchmark),
//   floor: std::memcpy of 1 GiB, split over the same host_policy{0} threads as the library (with one thread the
//          copy reaches less of the machine's bandwidth than the library's threads can), the bandwidth counting
//          read + write bytes (embedding_setup.hpp),
//   read floor: a read-only sum of 1 GiB over the same threads (ngemb_bench::read_floor, its fastest repetition):
//          a step mostly reads (rows, W_cat), which a copy's read + write bandwidth need not match.
// Counters (embedding_setup.hpp's set_counters): tokens_per_second; bytes_per_token (read + written); vs_naive =
// naive time / this time; vs_floor = time / (bytes moved / memcpy bandwidth); vs_read_floor = time / (bytes read /
// read-only bandwidth), the bytes read being bytes_per_token's less the output written: 1 means reading what the
// step must read once at that bandwidth.
// Iterations: Google Benchmark's default 0.5 s minimum, except the prefill, whose GEMM is 4096 x 3072 x 3072
// (77 GFLOP, ~1 s on a 2-core host): three iterations of the library path and one of the naive path (whose median
// of three was already taken at setup). The whole program runs in about a minute on 2 cores
// (most of it building and filling the 7.2 GB of tables and measuring the baselines).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

#include "ngemb/policy/host_policy.hpp"

#include "embedding_setup.hpp"
#include "host_timing.hpp"

namespace {

using ngemb_bench::variant;

using ngemb_bench::clock_type;
using ngemb_bench::memcpy_floor;
using ngemb_bench::read_floor;
using ngemb_bench::seconds_since;
using ngemb_bench::time_calls;

const ngemb::host_policy all_threads{0};

/// Built on first use (not before main), so --benchmark_list_tests and filters cost nothing.
memcpy_floor& floor_baseline() {
  static memcpy_floor floor(all_threads);
  return floor;
}

/// Built on first use, as floor_baseline().
read_floor& read_floor_baseline() {
  static read_floor floor(all_threads);
  return floor;
}

ngemb_bench::model<ngemb::host_policy>& host_model() {
  static ngemb_bench::model<ngemb::host_policy> model(all_threads);
  return model;
}

/// One shape's workload and the medians of its naive baselines.
struct shape_state {
  ngemb_bench::workload<ngemb::host_policy> work;
  double naive_seconds;
  double naive_gather_seconds;

  explicit shape_state(std::size_t index)
      : work(all_threads, host_model(), ngemb_bench::shapes[index], 2024 + static_cast<unsigned>(index)) {
    auto naive = [this] { work.run_naive(); };
    auto naive_gather = [this] { work.run_naive_gather(); };
    naive_seconds = ngemb_bench::median_seconds([&naive](long calls) { return time_calls(naive, calls); });
    naive_gather_seconds =
        ngemb_bench::median_seconds([&naive_gather](long calls) { return time_calls(naive_gather, calls); });
  }
};

shape_state& shape_at(std::size_t index) {
  static std::vector<std::unique_ptr<shape_state>> states(ngemb_bench::shapes.size());
  if (!states[index]) {
    floor_baseline();  // the floors first, before the tables take most of the memory
    read_floor_baseline();
    states[index] = std::make_unique<shape_state>(index);
  }
  return *states[index];
}

/// Times the loop itself (real time, like the framework) so the ratios can be printed as plain counters.
void run_shape(benchmark::State& state, std::size_t index, variant kind) {
  shape_state& shape = shape_at(index);
  auto& work = shape.work;
  const auto start = clock_type::now();
  for (auto _ : state) {
    ngemb_bench::run_once(work, kind);
    benchmark::ClobberMemory();
  }
  const double per_iteration = seconds_since(start) / static_cast<double>(state.iterations());
  ngemb_bench::set_counters(state, static_cast<double>(work.tokens()), ngemb_bench::bytes_per_token(work, kind),
                            per_iteration, kind == variant::gather ? shape.naive_gather_seconds : shape.naive_seconds,
                            floor_baseline().bandwidth(), read_floor_baseline().bandwidth());
  state.counters["threads"] = benchmark::Counter(static_cast<double>(all_threads.resolved_threads()));
}

void BM_memcpy_floor_1GiB(benchmark::State& state) {
  memcpy_floor& floor = floor_baseline();
  const auto start = clock_type::now();
  for (auto _ : state) {
    floor.copy();
  }
  const double per_iteration = seconds_since(start) / static_cast<double>(state.iterations());
  state.counters["GB_per_s_setup"] = benchmark::Counter(floor.bandwidth() / 1e9);  // the floor's bandwidth
  state.counters["GB_per_s"] = benchmark::Counter(2.0 * memcpy_floor::bytes / per_iteration / 1e9);
  state.counters["threads"] = benchmark::Counter(static_cast<double>(all_threads.resolved_threads()));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(2 * memcpy_floor::bytes));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::RegisterBenchmark("BM_memcpy_floor_1GiB", BM_memcpy_floor_1GiB)->UseRealTime()->Unit(
      benchmark::kMillisecond);
  ngemb_bench::register_shapes("BM_", run_shape, [](benchmark::internal::Benchmark* registered,
                                                     const ngemb_bench::shape_spec& shape, variant kind) {
    registered->UseRealTime()->Unit(benchmark::kMicrosecond);
    if (shape.length > 1 && kind != variant::gather) {  // the prefill: seconds per iteration (see the top)
      registered->Iterations(kind == variant::naive ? 1 : 3)->Unit(benchmark::kMillisecond);
    }
  });
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
