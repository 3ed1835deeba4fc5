// The block-scaled fp8 product at the LongCat-Flash-Lite W_cat shape (n = k = 3072: 12 projections of 256 columns
// into the 3072-wide hidden state) and decode batches m = 1 and 16, under ngemb::host_policy{0} (all hardware
// threads), against the same product with bf16 weights (gemm_nt's mixed path) and against the read floor.
//   BM_fp8/{m}           gemm_nt(policy, m, n, k, a, fp8 b, scale_inv, c): the runtime-dispatched path (AVX2+F16C
//                        where the CPU has them),
//   BM_fp8_portable/{m}  the portable loop of the same path, on the same threads (what a CPU without AVX2 runs),
//   BM_bf16/{m}          gemm_nt(policy, m, n, k, a, bf16 b, c).
// Counters, from medians over rounds that run every variant and the floor back to back (on a shared machine the
// load changes between benchmarks; within a round it hits all alike): vs_floor = time / the read floor's time,
// the floor being a read-only sum of as many bytes as the variant's weights (and fp8 scales) over the same threads;
// vs_bf16 = the bf16 time / this time; weight_GB_per_s = weight bytes / time. Every call, floor reads included,
// reads a different copy (128 MiB of copies per type, 4x this machine's L3), so each reads from DRAM as a decode
// step whose other layers evicted its weights would. The Time column is Google Benchmark's own loop.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/policy/detail/fp8_gemm_ops.hpp"
#include "ngemb/policy/fp8_gemm.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"

#include "host_timing.hpp"

namespace {

using ngemb_bench::clock_type;
using ngemb_bench::seconds_since;
using ngemb_bench::time_calls;

const ngemb::host_policy all_threads{0};
constexpr std::size_t n = 3072;
constexpr std::size_t k = 3072;
constexpr std::size_t max_m = 16;
constexpr std::size_t copy_bytes = std::size_t{128} << 20;

enum class variant { fp8, fp8_portable, bf16 };
constexpr std::size_t variants = 3;

/// Median seconds of each variant and of the floor reads of their bytes, over rounds that run them back to back.
struct round_medians {
  double variant_seconds[variants] = {};
  double floor_seconds[variants] = {};
};

struct bench_state {
  // First, before the weights take memory. Reads cycle through 256 MiB (8x this machine's L3), so each comes from
  // DRAM as the weights' copies do.
  ngemb_bench::read_floor floor{all_threads, std::size_t{256} << 20};
  std::size_t fp8_copies = copy_bytes / (n * k);
  std::size_t bf16_copies = copy_bytes / (n * k * sizeof(ngemb::bf16));
  std::size_t scale_count = ngemb::fp8_scale_blocks(n) * ngemb::fp8_scale_blocks(k);
  std::vector<ngemb::fp8_e4m3> fp8;
  std::vector<float> scale_inv;
  std::vector<ngemb::bf16> bf16;
  std::vector<float> a = std::vector<float>(max_m * k);
  std::vector<float> c = std::vector<float>(max_m * n);
  std::size_t next = 0;
  round_medians medians[max_m + 1];
  bool measured[max_m + 1] = {};

  bench_state() {
    // Weights as a checkpoint holds them: normal values, quantised per 128 x 128 block with amax / 448.
    std::mt19937 random(15);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> weights(n * k);
    for (float& value : weights) {
      value = normal(random);
    }
    for (float& value : a) {
      value = normal(random) * 50.0f;
    }
    scale_inv.resize(scale_count);
    std::vector<ngemb::fp8_e4m3> quantised(n * k);
    ngemb::for_each_n(all_threads, scale_count, ngemb::detail::fp8_block_scale_op<float>{weights.data(), n, k,
                                                                                          scale_inv.data()});
    ngemb::for_each_n(all_threads, n * k,
                      ngemb::detail::fp8_quantize_op<float>{weights.data(), scale_inv.data(), k, quantised.data()});
    fp8.reserve(fp8_copies * n * k);
    for (std::size_t copy = 0; copy < fp8_copies; ++copy) {
      fp8.insert(fp8.end(), quantised.begin(), quantised.end());
    }
    bf16.reserve(bf16_copies * n * k);
    for (std::size_t copy = 0; copy < bf16_copies; ++copy) {
      for (const float value : weights) {
        bf16.push_back(ngemb::bf16(value));
      }
    }
  }

  void run(variant which, std::size_t m) {
    const std::size_t copy = next++;
    const ngemb::view<const float> input(a.data(), m * k);
    const ngemb::view<float> output(c.data(), m * n);
    if (which == variant::bf16) {
      const ngemb::view<const ngemb::bf16> b(bf16.data() + copy % bf16_copies * n * k, n * k);
      ngemb::gemm_nt(all_threads, m, n, k, input, b, output);
    } else if (which == variant::fp8) {
      const ngemb::view<const ngemb::fp8_e4m3> b(fp8.data() + copy % fp8_copies * n * k, n * k);
      ngemb::gemm_nt(all_threads, m, n, k, input, b, scale_inv, output);
    } else {
      const ngemb::fp8_e4m3* const b = fp8.data() + copy % fp8_copies * n * k;
      const std::size_t threads = all_threads.resolved_threads();
      ngemb::for_each_n(ngemb::host_policy{static_cast<unsigned>(threads), 1}, threads, [&](std::size_t part) {
        ngemb::detail::fp8_direct_rows_portable(m, n, k, a.data(), b, scale_inv.data(), c.data(), n * part / threads,
                                                n * (part + 1) / threads);
      });
    }
    benchmark::ClobberMemory();
  }

  [[nodiscard]] double weight_bytes(variant which) const {
    return which == variant::bf16 ? static_cast<double>(n * k * sizeof(ngemb::bf16))
                                  : static_cast<double>(n * k + scale_count * sizeof(float));
  }

  const round_medians& rounds(std::size_t m) {
    if (!measured[m]) {
      constexpr int count = 41;
      std::vector<double> times[2 * variants];
      for (int round = -2; round < count; ++round) {  // two warm-up rounds
        for (std::size_t v = 0; v < variants; ++v) {
          auto start = clock_type::now();
          run(static_cast<variant>(v), m);
          const double ran = seconds_since(start);
          start = clock_type::now();
          floor.read(static_cast<std::size_t>(weight_bytes(static_cast<variant>(v))));
          const double read = seconds_since(start);
          if (round >= 0) {
            times[v].push_back(ran);
            times[variants + v].push_back(read);
          }
        }
      }
      for (std::size_t v = 0; v < 2 * variants; ++v) {
        std::sort(times[v].begin(), times[v].end());
        (v < variants ? medians[m].variant_seconds[v] : medians[m].floor_seconds[v - variants]) = times[v][count / 2];
      }
      measured[m] = true;
    }
    return medians[m];
  }
};

bench_state& state() {
  static bench_state built;
  return built;
}

void run_variant(benchmark::State& bench, variant which, std::size_t m) {
  bench_state& s = state();
  const round_medians& medians = s.rounds(m);
  for (auto _ : bench) {
    s.run(which, m);
  }
  const auto v = static_cast<std::size_t>(which);
  const double seconds = medians.variant_seconds[v];
  bench.counters["vs_floor"] = benchmark::Counter(seconds / medians.floor_seconds[v]);
  bench.counters["vs_bf16"] = benchmark::Counter(medians.variant_seconds[static_cast<std::size_t>(variant::bf16)] /
                                                 seconds);
  bench.counters["weight_GB_per_s"] = benchmark::Counter(s.weight_bytes(which) / seconds / 1e9);
  bench.counters["floor_GB_per_s"] = benchmark::Counter(s.weight_bytes(which) / medians.floor_seconds[v] / 1e9);
  bench.counters["median_us"] = benchmark::Counter(seconds * 1e6);
  bench.counters["threads"] = benchmark::Counter(static_cast<double>(all_threads.resolved_threads()));
}

}  // namespace

int main(int argc, char** argv) {
  for (const std::size_t m : {std::size_t{1}, max_m}) {
    for (const auto& [name, which] : {std::pair{"BM_fp8/", variant::fp8},
                                      std::pair{"BM_fp8_portable/", variant::fp8_portable},
                                      std::pair{"BM_bf16/", variant::bf16}}) {
      const std::string full = name + std::to_string(m);
      benchmark::RegisterBenchmark(full.c_str(), [which = which, m](benchmark::State& bench) {
        run_variant(bench, which, m);
      })->UseRealTime()->Unit(benchmark::kMicrosecond);
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
