// Device hashing throughput of the LongCat-Flash-Lite hash (12 sub-tables, uint32 ids) under device_policy, for
// the same shapes as bench/hash.cpp: decode (64 sequences x 1 token, look-back from a device n-gram cache) and
// prefill (8 x 4096 tokens). Times come from cudaEvents on the policy's stream (manual time). Baselines, timed in
// the same process at setup and also registered as benchmarks of their own:
//   naive: one thread per (token, sub-table) evaluating the SPEC §2 sum with a 64-bit `%` per term,
//   floor: a device-to-device cudaMemcpyAsync of half as many bytes as the hash reads and writes
//          (a copy reads and writes each byte, so the traffic is equal).
// The library call is timed end to end, so its host-side input checks (a read-back that synchronises) count.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "stream_timer.cuh"

#include "random_batch.hpp"

namespace {

using ngemb_bench::batch;
using ngemb_bench::id_type;
using ngemb_bench::random_batch;
using ngemb_bench::token_type;


/// What the naive kernel needs per sub-table, by value: m_i and the weights V^j mod m_i.
struct naive_tables {
  static constexpr int max_tables = 16;
  static constexpr int max_terms = 8;

  int tables = 0;
  int splits = 1;
  std::int64_t eos = -1;
  std::uint64_t moduli[max_tables] = {};
  std::uint64_t weights[max_tables][max_terms] = {};

  explicit naive_tables(const ngemb::ngram_config& config)
      : tables(config.num_tables()), splits(config.splits), eos(config.eos_token.value_or(-1)) {
    if (tables > max_tables || config.max_order > max_terms) {  // Lite needs 12 tables of up to 4 terms
      throw ngemb::invalid_argument("naive_tables: config too large for the benchmark's fixed arrays");
    }
    for (int table = 0; table < tables; ++table) {  // SPEC §2: repeated multiply-mod, exact integers
      moduli[table] = static_cast<std::uint64_t>(config.modulus(table));
      weights[table][0] = 1;
      for (int j = 1; j <= config.order_of(table) - 1; ++j) {
        weights[table][j] = weights[table][j - 1] * static_cast<std::uint64_t>(config.vocab_size) % moduli[table];
      }
    }
  }
};

/// The inputs of the naive evaluation; host or device pointers.
struct naive_input {
  const token_type* tokens;
  const std::int64_t* offsets;
  std::size_t sequences;
  const token_type* context;
  const std::int64_t* context_offsets;
};

/// One (token, sub-table) id straight from SPEC §2, written independently of the library; `index` is
/// token * tables + table, the output layout.
__host__ __device__ id_type naive_id(const naive_tables& params, const naive_input& input, std::size_t index) {
  const auto p = static_cast<std::int64_t>(index / static_cast<std::size_t>(params.tables));
  const int table = static_cast<int>(index % static_cast<std::size_t>(params.tables));
  const int n = table / params.splits + 2;
  std::size_t low = 0;  // the last sequence starting at or before p
  std::size_t high = input.sequences;
  while (high - low > 1) {
    const std::size_t middle = (low + high) / 2;
    if (input.offsets[middle] <= p) {
      low = middle;
    } else {
      high = middle;
    }
  }
  const std::int64_t begin = input.offsets[low];
  const std::int64_t context_begin = input.context_offsets[low];
  const std::int64_t context_end = input.context_offsets[low + 1];
  const std::uint64_t modulus = params.moduli[table];
  std::uint64_t sum = static_cast<std::uint64_t>(input.tokens[p]) % modulus;
  for (std::int64_t j = 1; j < n; ++j) {
    token_type token = 0;
    if (p - j >= begin) {
      token = input.tokens[p - j];
    } else {
      const std::int64_t in_context = context_end - (begin - (p - j));
      if (in_context < context_begin) {
        break;  // before the start of the stream: zero padding
      }
      token = input.context[in_context];
    }
    if (token == params.eos) {
      break;  // EOS and everything before it contribute 0
    }
    sum += static_cast<std::uint64_t>(token) * params.weights[table][j] % modulus;
  }
  return static_cast<id_type>(sum % modulus);
}

__global__ void naive_hash_kernel(naive_tables params, naive_input input, id_type* ids, std::size_t count) {
  const std::size_t index = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index < count) {
    ids[index] = naive_id(params, input, index);
  }
}

/// The workload's inputs and outputs are made on the legacy stream (before the benchmark's stream exists), which
/// cudaDeviceSynchronize then orders before the benchmark's work; they are freed there after the last of it.
const ngemb::device_policy legacy_stream{};

template <class T>
ngemb::device_buffer<T> upload(const std::vector<T>& values) {
  ngemb::device_buffer<T> buffer(legacy_stream, values.size());
  NGEMB_CUDA_CHECK(cudaMemcpy(buffer.data(), values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice));
  return buffer;
}

template <class T>
std::vector<T> download(const ngemb::device_buffer<T>& buffer) {
  std::vector<T> values(buffer.size());
  NGEMB_CUDA_CHECK(cudaMemcpy(values.data(), buffer.data(), values.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return values;
}

/// One shape on the device: inputs, the n-gram cache when look-back comes from it, outputs, the stream and its
/// timing events, and the baselines' timings.
class device_workload {
 public:
  device_workload(std::size_t sequences, std::size_t length, std::size_t cached, unsigned seed)
      : config_(ngemb::ngram_config::longcat_flash_lite()),
        hasher_(config_),
        naive_(config_),
        host_(random_batch(config_, sequences, length, cached, seed)),
        tokens_(upload(host_.tokens)),
        offsets_(upload(host_.offsets)),
        context_(upload(host_.context)),
        context_offsets_(upload(host_.context_offsets)),
        ids_(legacy_stream, host_.tokens.size() * static_cast<std::size_t>(hasher_.num_tables())),
        naive_ids_(legacy_stream, ids_.size()),
        copy_source_(legacy_stream, bytes_per_token() * host_.tokens.size() / 2),
        copy_target_(legacy_stream, copy_source_.size()) {
    NGEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    policy_ = ngemb::device_policy{stream_};
    NGEMB_CUDA_CHECK(cudaMemset(copy_source_.data(), 1, copy_source_.size()));
    // The uploads and the memset ran on the legacy stream, which a non-blocking stream does not wait for.
    NGEMB_CUDA_CHECK(cudaDeviceSynchronize());
    if (cached > 0) {
      // Decode: the slots already hold the committed tokens; hash_tokens never changes them, so every
      // iteration hashes the same step.
      cache_.emplace(policy_, config_, sequences, 0);
      for (std::size_t s = 0; s < sequences; ++s) {
        slots_.push_back(cache_->allocate());
      }
      cache_->advance(ngemb::view<const std::int32_t>(slots_), context_view());
      ngemb::synchronize(policy_);
    }
    verify();
    naive_seconds_ = median_seconds([this] { run_naive(); });
    floor_seconds_ = median_seconds([this] { run_floor(); });
  }

  device_workload(const device_workload&) = delete;
  device_workload& operator=(const device_workload&) = delete;
  ~device_workload() {
    cache_.reset();  // its buffers go before the stream they were used on
    cudaStreamSynchronize(stream_);  // the legacy stream, where the other buffers are freed, does not wait for it
    cudaStreamDestroy(stream_);
  }

  void run_library() {
    if (cache_) {
      ngemb::hash_tokens(policy_, hasher_, *cache_, ngemb::view<const std::int32_t>(slots_), token_view(),
                         ids_.as_view());
    } else {
      ngemb::hash_tokens(policy_, hasher_, token_view(), ids_.as_view());
    }
  }

  void run_naive() {
    const std::size_t count = naive_ids_.size();
    constexpr unsigned threads = 256;
    naive_hash_kernel<<<static_cast<unsigned>((count + threads - 1) / threads), threads, 0, stream_>>>(
        naive_, device_input(), naive_ids_.data(), count);
    NGEMB_CUDA_CHECK(cudaGetLastError());
  }

  void run_floor() {
    NGEMB_CUDA_CHECK(cudaMemcpyAsync(copy_target_.data(), copy_source_.data(), copy_source_.size(),
                                     cudaMemcpyDeviceToDevice, stream_));
  }

  /// Seconds `run` takes on the stream, between two events.
  template <class Run>
  double time_on_stream(Run&& run, long calls = 1) {
    return timer_.seconds(stream_, run, calls);
  }

  [[nodiscard]] std::size_t bytes_per_token() const { return ngemb_bench::bytes_per_token(hasher_.num_tables()); }
  [[nodiscard]] std::size_t num_tokens() const { return host_.tokens.size(); }
  [[nodiscard]] const std::string& failure() const { return failure_; }
  [[nodiscard]] double naive_seconds() const { return naive_seconds_; }
  [[nodiscard]] double floor_seconds() const { return floor_seconds_; }

 private:
  [[nodiscard]] ngemb::ragged_view<const token_type> token_view() const {
    return {ngemb::view<const token_type>(tokens_.data(), tokens_.size()),
            ngemb::view<const std::int64_t>(offsets_.data(), offsets_.size())};
  }
  [[nodiscard]] ngemb::ragged_view<const token_type> context_view() const {
    return {ngemb::view<const token_type>(context_.data(), context_.size()),
            ngemb::view<const std::int64_t>(context_offsets_.data(), context_offsets_.size())};
  }
  [[nodiscard]] naive_input device_input() const {
    return {tokens_.data(), offsets_.data(), host_.offsets.size() - 1, context_.data(), context_offsets_.data()};
  }

  /// The library's device ids must equal the naive kernel's, and both the naive evaluation run on the host.
  void verify() {
    const naive_input on_host{host_.tokens.data(), host_.offsets.data(), host_.offsets.size() - 1,
                              host_.context.data(), host_.context_offsets.data()};
    std::vector<id_type> expected(ids_.size());
    for (std::size_t index = 0; index < expected.size(); ++index) {
      expected[index] = naive_id(naive_, on_host, index);
    }
    NGEMB_CUDA_CHECK(cudaMemsetAsync(ids_.data(), 0xff, ids_.size() * sizeof(id_type), stream_));
    run_library();
    run_naive();
    ngemb::synchronize(policy_);
    const std::vector<id_type> library = download(ids_);
    const std::vector<id_type> naive = download(naive_ids_);
    const auto tables = static_cast<std::size_t>(hasher_.num_tables());
    for (const auto& [name, ids] : {std::pair{"library", &library}, std::pair{"naive kernel", &naive}}) {
      const auto mismatch = std::mismatch(ids->begin(), ids->end(), expected.begin());
      if (mismatch.first != ids->end()) {
        const auto index = static_cast<std::size_t>(mismatch.first - ids->begin());
        failure_ = std::string(name) + " ids differ from the host naive evaluation at token " +
                   std::to_string(index / tables) + ", table " + std::to_string(index % tables) + ": " +
                   std::to_string(*mismatch.first) + " vs " + std::to_string(*mismatch.second);
        return;
      }
    }
  }

  /// Median seconds per call over 7 repetitions, each long enough (>= 1 ms of device time) that event
  /// resolution (~0.5 us) does not matter.
  template <class Run>
  double median_seconds(Run&& run) {
    const double once = std::max(time_on_stream(run), 1e-7);
    const auto calls = static_cast<long>(std::ceil(1e-3 / once));
    std::array<double, 7> repetitions{};
    for (double& repetition : repetitions) {
      repetition = time_on_stream(run, calls) / static_cast<double>(calls);
    }
    std::sort(repetitions.begin(), repetitions.end());
    return repetitions[repetitions.size() / 2];
  }

  ngemb::ngram_config config_;
  ngemb::longcat_hash hasher_;
  naive_tables naive_;
  batch host_;
  ngemb::device_buffer<token_type> tokens_;
  ngemb::device_buffer<std::int64_t> offsets_;
  ngemb::device_buffer<token_type> context_;
  ngemb::device_buffer<std::int64_t> context_offsets_;
  ngemb::device_buffer<id_type> ids_;
  ngemb::device_buffer<id_type> naive_ids_;
  ngemb::device_buffer<std::byte> copy_source_;
  ngemb::device_buffer<std::byte> copy_target_;
  cudaStream_t stream_ = nullptr;
  ngemb_bench::stream_timer timer_;
  ngemb::device_policy policy_;
  std::optional<ngemb::ngram_cache<std::int32_t, ngemb::device_policy>> cache_;
  std::vector<std::int32_t> slots_;
  std::string failure_;
  double naive_seconds_ = 0;
  double floor_seconds_ = 0;
};

// Built on first use and destroyed explicitly at the end of main, while the CUDA context is still alive.
std::unique_ptr<device_workload> decode_workload;
std::unique_ptr<device_workload> prefill_workload;

device_workload& decode_shape() {
  if (!decode_workload) {
    decode_workload = std::make_unique<device_workload>(64, 1, 3, 2024);
  }
  return *decode_workload;
}

device_workload& prefill_shape() {
  if (!prefill_workload) {
    prefill_workload = std::make_unique<device_workload>(8, 4096, 0, 2025);
  }
  return *prefill_workload;
}

enum class variant { library, naive, memcpy_floor };

/// Each iteration is bracketed by events on the stream; the same per-iteration times feed the ratio counters.
template <class Shape>
void run_variant(benchmark::State& state, Shape shape_of, variant kind) {
  try {
    device_workload& shape = shape_of();
    if (!shape.failure().empty()) {
      state.SkipWithError(shape.failure().c_str());
      return;
    }
    const auto run = [&shape, kind] {
      switch (kind) {
        case variant::library:
          shape.run_library();
          break;
        case variant::naive:
          shape.run_naive();
          break;
        case variant::memcpy_floor:
          shape.run_floor();
          break;
      }
    };
    double total = 0;
    for (auto _ : state) {
      const double seconds = shape.time_on_stream(run);
      state.SetIterationTime(seconds);
      total += seconds;
    }
    const double per_iteration = total / static_cast<double>(state.iterations());
    const auto tokens = static_cast<double>(shape.num_tokens());
    state.counters["tokens"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["bytes_per_token"] = benchmark::Counter(static_cast<double>(shape.bytes_per_token()));
    state.counters["speedup_vs_naive"] = benchmark::Counter(shape.naive_seconds() / per_iteration);
    state.counters["ratio_to_memcpy_floor"] = benchmark::Counter(per_iteration / shape.floor_seconds());
    state.SetBytesProcessed(state.iterations() *
                            static_cast<std::int64_t>(shape.bytes_per_token() * shape.num_tokens()));
  } catch (const ngemb::error& failure) {  // CUDA failures and library errors end this benchmark, not the run
    state.SkipWithError(failure.what());
  }
}

void BM_device_decode_64x1(benchmark::State& state) { run_variant(state, decode_shape, variant::library); }
void BM_device_decode_64x1_naive(benchmark::State& state) { run_variant(state, decode_shape, variant::naive); }
void BM_device_decode_64x1_memcpy_floor(benchmark::State& state) {
  run_variant(state, decode_shape, variant::memcpy_floor);
}
void BM_device_prefill_8x4096(benchmark::State& state) { run_variant(state, prefill_shape, variant::library); }
void BM_device_prefill_8x4096_naive(benchmark::State& state) { run_variant(state, prefill_shape, variant::naive); }
void BM_device_prefill_8x4096_memcpy_floor(benchmark::State& state) {
  run_variant(state, prefill_shape, variant::memcpy_floor);
}

BENCHMARK(BM_device_decode_64x1)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_device_decode_64x1_naive)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_device_decode_64x1_memcpy_floor)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_device_prefill_8x4096)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_device_prefill_8x4096_naive)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_device_prefill_8x4096_memcpy_floor)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  // Built whenever nvcc exists, so it must also run (and pass) on machines without a GPU.
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping device benchmarks\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  decode_workload.reset();
  prefill_workload.reset();
  return 0;
}
