// Host hashing throughput of the LongCat-Flash-Lite hash (N=4, K=4: 12 sub-tables, uint32 ids) for a decode-like
// step (64 sequences x 1 token, look-back from the n-gram cache) and a prefill-like batch (8 x 4096 tokens).
// Every library benchmark is compared with two baselines timed in the same process at setup:
//   naive: the reference design's per-sub-table loop with a 64-bit `%` per term (how the official module loops),
//   floor: a std::memcpy of half as many bytes as the hash reads and writes
//          (tokens in + ids out): a copy reads and writes each byte, so the traffic is equal.
// The baselines are also registered as benchmarks of their own, so their rates appear in the same table.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/policy/host_policy.hpp"

#include "random_batch.hpp"

namespace {

using ngemb_bench::batch;
using ngemb_bench::id_type;
using ngemb_bench::random_batch;
using ngemb_bench::token_type;

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}


/// The reference design, written independently of the library: for each order n and split k, the weights
/// V^j mod m by repeated multiply-mod, then one pass over every token summing t_j * w_j with a 64-bit `%` per
/// term, look-back from the sequence and then its context, stopped at EOS and at the start of the stream.
void naive_hash(const ngemb::ngram_config& config, const batch& input, std::vector<id_type>& ids) {
  const auto tables = static_cast<std::size_t>(config.num_tables());
  const auto vocab = static_cast<std::uint64_t>(config.vocab_size);
  const std::int64_t eos = config.eos_token.value_or(-1);
  for (int n = 2; n <= config.max_order; ++n) {
    for (int k = 0; k < config.splits; ++k) {
      const int table = (n - 2) * config.splits + k;
      const auto modulus = static_cast<std::uint64_t>(config.modulus(table));
      std::vector<std::uint64_t> weights(static_cast<std::size_t>(n), 1);
      for (int j = 1; j < n; ++j) {
        weights[static_cast<std::size_t>(j)] = weights[static_cast<std::size_t>(j - 1)] * vocab % modulus;
      }
      for (std::size_t s = 0; s + 1 < input.offsets.size(); ++s) {
        const std::int64_t begin = input.offsets[s];
        const std::int64_t context_begin = input.context_offsets[s];
        const std::int64_t context_end = input.context_offsets[s + 1];
        for (std::int64_t p = begin; p < input.offsets[s + 1]; ++p) {
          std::uint64_t sum = static_cast<std::uint64_t>(input.tokens[static_cast<std::size_t>(p)]) % modulus;
          for (std::int64_t j = 1; j < n; ++j) {
            token_type token = 0;
            if (p - j >= begin) {
              token = input.tokens[static_cast<std::size_t>(p - j)];
            } else {
              const std::int64_t in_context = context_end - (begin - (p - j));
              if (in_context < context_begin) {
                break;  // before the start of the stream: zero padding
              }
              token = input.context[static_cast<std::size_t>(in_context)];
            }
            if (token == eos) {
              break;  // EOS and everything before it contribute 0
            }
            sum += static_cast<std::uint64_t>(token) * weights[static_cast<std::size_t>(j)] % modulus;
          }
          ids[static_cast<std::size_t>(p) * tables + static_cast<std::size_t>(table)] =
              static_cast<id_type>(sum % modulus);
        }
      }
    }
  }
}

/// Median seconds per call over 7 repetitions, each calling `run` often enough to last >= 2 ms so the clock's
/// resolution does not matter. A 20 ms warm-up first: the first tens of milliseconds of a fresh loop measure
/// up to 1.8x slower here (seen on the memcpy floor), which would skew every ratio. The median ignores a
/// repetition disturbed by other work on the machine.
template <class Run>
double median_seconds(Run&& run) {
  long calls = 0;
  const auto warm_up = clock_type::now();
  while (seconds_since(warm_up) < 20e-3) {
    run();
    ++calls;
  }
  calls = std::max(1L, static_cast<long>(std::ceil(2e-3 / (seconds_since(warm_up) / static_cast<double>(calls)))));
  std::array<double, 7> repetitions{};
  for (double& repetition : repetitions) {
    const auto start = clock_type::now();
    for (long call = 0; call < calls; ++call) {
      run();
    }
    repetition = seconds_since(start) / static_cast<double>(calls);
  }
  std::sort(repetitions.begin(), repetitions.end());
  return repetitions[repetitions.size() / 2];
}

/// One shape: inputs, the n-gram cache when look-back comes from it, outputs, and the baselines' timings.
class workload {
 public:
  workload(std::size_t sequences, std::size_t length, std::size_t cached, unsigned seed)
      : config_(ngemb::ngram_config::longcat_flash_lite()),
        hasher_(config_),
        input_(random_batch(config_, sequences, length, cached, seed)),
        ids_(input_.tokens.size() * static_cast<std::size_t>(hasher_.num_tables())),
        expected_(ids_.size()),
        copy_source_(bytes_per_token() * input_.tokens.size() / 2),
        copy_target_(copy_source_.size()) {
    if (cached > 0) {
      // Decode: the slots already hold the committed tokens; hash_tokens never changes them, so every
      // iteration hashes the same step.
      cache_.emplace(ngemb::host_policy{}, config_, sequences, 0);
      for (std::size_t s = 0; s < sequences; ++s) {
        slots_.push_back(cache_->allocate());
      }
      cache_->advance(ngemb::view<const std::int32_t>(slots_), input_.context_view());
    }
    naive_hash(config_, input_, expected_);
    for (const unsigned threads : {1u, 0u}) {  // sequential and all hardware threads
      std::fill(ids_.begin(), ids_.end(), id_type{0xdeadbeef});
      run_library(ngemb::host_policy{threads});
      if (ids_ != expected_ && failure_.empty()) {
        const auto mismatch = std::mismatch(ids_.begin(), ids_.end(), expected_.begin());
        const auto index = static_cast<std::size_t>(mismatch.first - ids_.begin());
        failure_ = "library ids differ from the naive loop (threads = " + std::to_string(threads) + ") at token " +
                   std::to_string(index / static_cast<std::size_t>(hasher_.num_tables())) + ", table " +
                   std::to_string(index % static_cast<std::size_t>(hasher_.num_tables())) + ": " +
                   std::to_string(*mismatch.first) + " vs " + std::to_string(*mismatch.second);
      }
    }
    std::fill(copy_source_.begin(), copy_source_.end(), std::byte{1});
    naive_seconds_ = median_seconds([this] { run_naive(); });
    floor_seconds_ = median_seconds([this] { run_floor(); });
  }

  void run_library(const ngemb::host_policy& policy) {
    if (cache_) {
      ngemb::hash_tokens(policy, hasher_, *cache_, ngemb::view<const std::int32_t>(slots_), input_.token_view(),
                         ngemb::view<id_type>(ids_));
    } else {
      ngemb::hash_tokens(policy, hasher_, input_.token_view(), ngemb::view<id_type>(ids_));
    }
    benchmark::DoNotOptimize(ids_.data());
    benchmark::ClobberMemory();
  }

  void run_naive() {
    naive_hash(config_, input_, ids_);
    benchmark::DoNotOptimize(ids_.data());
    benchmark::ClobberMemory();
  }

  void run_floor() {
    std::memcpy(copy_target_.data(), copy_source_.data(), copy_source_.size());
    benchmark::DoNotOptimize(copy_target_.data());
    benchmark::ClobberMemory();
  }

  [[nodiscard]] std::size_t bytes_per_token() const { return ngemb_bench::bytes_per_token(hasher_.num_tables()); }
  [[nodiscard]] std::size_t num_tokens() const { return input_.tokens.size(); }
  [[nodiscard]] const std::string& failure() const { return failure_; }
  [[nodiscard]] double naive_seconds() const { return naive_seconds_; }
  [[nodiscard]] double floor_seconds() const { return floor_seconds_; }

 private:
  ngemb::ngram_config config_;
  ngemb::longcat_hash hasher_;
  batch input_;
  std::optional<ngemb::ngram_cache<>> cache_;
  std::vector<std::int32_t> slots_;
  std::vector<id_type> ids_;
  std::vector<id_type> expected_;
  std::vector<std::byte> copy_source_;
  std::vector<std::byte> copy_target_;
  std::string failure_;
  double naive_seconds_ = 0;
  double floor_seconds_ = 0;
};

// Built on first use (not before main) so `--benchmark_list_tests` and filters that skip a shape cost nothing.
workload& decode_shape() {
  static workload shape(64, 1, 3, 2024);
  return shape;
}

workload& prefill_shape() {
  static workload shape(8, 4096, 0, 2025);
  return shape;
}

enum class variant { library, naive, memcpy_floor };

/// Times the loop itself (the same span the framework times in real time) so the ratios can be printed as plain
/// counters; a rate counter would divide by time and print "/s".
template <class Run>
void measure(benchmark::State& state, workload& shape, Run run) {
  if (!shape.failure().empty()) {
    state.SkipWithError(shape.failure().c_str());
    return;
  }
  const auto start = clock_type::now();
  for (auto _ : state) {
    run();
  }
  const double per_iteration = seconds_since(start) / static_cast<double>(state.iterations());
  const auto tokens = static_cast<double>(shape.num_tokens());
  state.counters["tokens"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes_per_token"] = benchmark::Counter(static_cast<double>(shape.bytes_per_token()));
  state.counters["speedup_vs_naive"] = benchmark::Counter(shape.naive_seconds() / per_iteration);
  state.counters["ratio_to_memcpy_floor"] = benchmark::Counter(per_iteration / shape.floor_seconds());
  state.SetBytesProcessed(state.iterations() *
                          static_cast<std::int64_t>(shape.bytes_per_token() * shape.num_tokens()));
}

template <class Shape>
void run_variant(benchmark::State& state, Shape shape_of, variant kind, unsigned threads) {
  workload& shape = shape_of();
  switch (kind) {
    case variant::library:
      measure(state, shape, [&shape, policy = ngemb::host_policy{threads}] { shape.run_library(policy); });
      break;
    case variant::naive:
      measure(state, shape, [&shape] { shape.run_naive(); });
      break;
    case variant::memcpy_floor:
      measure(state, shape, [&shape] { shape.run_floor(); });
      break;
  }
}

void BM_decode_64x1(benchmark::State& state) { run_variant(state, decode_shape, variant::library, 1); }
void BM_decode_64x1_naive(benchmark::State& state) { run_variant(state, decode_shape, variant::naive, 1); }
void BM_decode_64x1_memcpy_floor(benchmark::State& state) {
  run_variant(state, decode_shape, variant::memcpy_floor, 1);
}
void BM_prefill_8x4096(benchmark::State& state) { run_variant(state, prefill_shape, variant::library, 1); }
void BM_prefill_8x4096_threads_all(benchmark::State& state) {
  run_variant(state, prefill_shape, variant::library, 0);  // host_policy{0}: every hardware thread
}
void BM_prefill_8x4096_naive(benchmark::State& state) { run_variant(state, prefill_shape, variant::naive, 1); }
void BM_prefill_8x4096_memcpy_floor(benchmark::State& state) {
  run_variant(state, prefill_shape, variant::memcpy_floor, 1);
}

// Real time throughout: the threaded variant's work is not on the main thread's CPU clock.
BENCHMARK(BM_decode_64x1)->UseRealTime();
BENCHMARK(BM_decode_64x1_naive)->UseRealTime();
BENCHMARK(BM_decode_64x1_memcpy_floor)->UseRealTime();
BENCHMARK(BM_prefill_8x4096)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_prefill_8x4096_threads_all)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_prefill_8x4096_naive)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_prefill_8x4096_memcpy_floor)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
