// The block-scaled fp8 product at the LongCat-Flash-Lite W_cat shape (n = k = 3072: 12 projections of 256 columns
// into the 3072-wide hidden state) and decode batches m = 1 and 16, under ngemb::host_policy{0} (all hardware
// threads), against the same product with bf16 weights (gemm_nt's mixed path) and against the read floor.
//   BM_fp8/{m}           gemm_nt(policy, m, n, k, a, fp8 b, scale_inv, c): the runtime-dispatched path (AVX2+F16C
//                        where the CPU has them),
//   BM_fp8_portable/{m}  the portable loop of the same path, on the same threads (what a CPU without AVX2 runs),
//   BM_bf16/{m}          gemm_nt(policy, m, n, k, a, bf16 b, c).
// Counters: weight_GB_per_s (weight bytes read per second); vs_floor = time / (weight bytes / read bandwidth), the
// bandwidth from summing a 256 MiB buffer over the same threads, measured in the same run (read-only, as a
// product reads its weights); vs_bf16 = the bf16 median / this time. Every call reads a different copy of the
// weights (128 MiB of copies per type, 4x this machine's L3), so each reads from DRAM as a decode step whose
// other layers evicted them would.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
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

/// Read-only bandwidth: a 256 MiB buffer summed in 64-bit words, one contiguous share per thread.
double read_bandwidth(const ngemb::host_policy& policy) {
  const std::size_t words = (std::size_t{256} << 20) / sizeof(std::uint64_t);
  std::vector<std::uint64_t> buffer(words, 1);
  const std::size_t threads = policy.resolved_threads();
  std::vector<std::uint64_t> sums(threads);
  auto run = [&] {
    ngemb::for_each_n(ngemb::host_policy{static_cast<unsigned>(threads), 1}, threads, [&](std::size_t part) {
      std::uint64_t sum = 0;
      for (std::size_t i = words * part / threads; i < words * (part + 1) / threads; ++i) {
        sum += buffer[i];
      }
      sums[part] = sum;
    });
    benchmark::DoNotOptimize(sums.data());
    benchmark::ClobberMemory();
  };
  return static_cast<double>(words * sizeof(std::uint64_t)) /
         ngemb_bench::median_seconds([&run](long calls) { return time_calls(run, calls); });
}

enum class variant { fp8, fp8_portable, bf16 };

struct bench_state {
  double bandwidth = read_bandwidth(all_threads);  // first, before the weights take memory
  std::size_t fp8_copies = copy_bytes / (n * k);
  std::size_t bf16_copies = copy_bytes / (n * k * sizeof(ngemb::bf16));
  std::size_t scale_count = ngemb::fp8_scale_blocks(n) * ngemb::fp8_scale_blocks(k);
  std::vector<ngemb::fp8_e4m3> fp8;
  std::vector<float> scale_inv;
  std::vector<ngemb::bf16> bf16;
  std::vector<float> a = std::vector<float>(max_m * k);
  std::vector<float> c = std::vector<float>(max_m * n);
  std::size_t next = 0;
  double bf16_seconds[max_m + 1] = {};

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

  double median(variant which, std::size_t m) {
    auto call = [this, which, m] { run(which, m); };
    return ngemb_bench::median_seconds([&call](long calls) { return time_calls(call, calls); });
  }
};

bench_state& state() {
  static bench_state built;
  return built;
}

void run_variant(benchmark::State& bench, variant which, std::size_t m) {
  bench_state& s = state();
  if (s.bf16_seconds[m] == 0) {
    s.bf16_seconds[m] = s.median(variant::bf16, m);
  }
  const auto start = clock_type::now();
  for (auto _ : bench) {
    s.run(which, m);
  }
  const double per_iteration = seconds_since(start) / static_cast<double>(bench.iterations());
  const double weight_bytes = static_cast<double>(n * k) * (which == variant::bf16 ? 2.0 : 1.0) +
                              (which == variant::bf16 ? 0.0 : static_cast<double>(s.scale_count) * 4.0);
  bench.counters["weight_GB_per_s"] = benchmark::Counter(weight_bytes / per_iteration / 1e9);
  bench.counters["vs_floor"] = benchmark::Counter(per_iteration / (weight_bytes / s.bandwidth));
  bench.counters["vs_bf16"] = benchmark::Counter(s.bf16_seconds[m] / per_iteration);
  bench.counters["read_GB_per_s"] = benchmark::Counter(s.bandwidth / 1e9);
  bench.counters["threads"] = benchmark::Counter(static_cast<double>(all_threads.resolved_threads()));
}

}  // namespace

int main(int argc, char** argv) {
  for (const std::size_t m : {std::size_t{1}, max_m}) {
    for (const auto& [name, which] : {std::pair{"BM_fp8/", variant::fp8}, std::pair{"BM_fp8_portable/", variant::fp8_portable},
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
