// The gather of a device forward when the sub-tables stay in host memory: host_resident_store<bf16, device_policy>
// (mapped page-locked sub-tables, every row read over the bus by the gather kernel) against the same gather from a
// device-resident table_store<bf16, device_policy>, at LongCat-Flash-Lite's row shape (T = 12 sub-tables, d = 256
// bf16: 6 KiB per token) with m_i = 2^19 + 2i + 1 rows (12 x 512K x 512 B = 3.2 GB, pinned once and copied once to
// the device: far beyond every cache, within the device machine's host memory). Batches: decode B = 1, 64 and 256
// and a 4096-token prefill; each call takes the next batch of a pool of >= 32768 tokens of uniform random ids
// (200 MB of rows), so a repeated benchmark never finds its rows in a cache.
//   store_host_resident_gather_{batch}  detail::gather_rows over the host-resident store, as embed_hashed runs it,
//   store_device_gather_{batch}         the same over the device-resident store (the second baseline),
//   store_pcie_read_floor_1GiB          the floor: a kernel streaming 1 GiB of mapped page-locked memory in 16-byte
//                                       loads, the bus's read bandwidth in this run.
// Counters: bus_bytes_per_token = T*d*2 (the rows; the fp32 rows written stay on the device), GB_per_s of rows read,
// vs_pcie_floor = time / (row bytes at the floor's bandwidth), vs_device = time / the device-resident gather's
// median (both baselines measured in the same process at setup). Times come from cudaEvents on the stream.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/cuda/error.cuh"
#include "ngemb/embed/detail/embedding_pipeline.hpp"
#include "ngemb/policy/device_buffer.cuh"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/policy/mapped_host_buffer.cuh"
#include "ngemb/store/host_resident_store.cuh"
#include "ngemb/store/table_store.hpp"

#include "embedding_setup.hpp"
#include "median.hpp"
#include "stream_timer.cuh"

namespace {

using resident_store = ngemb::host_resident_store<ngemb::bf16, ngemb::device_policy>;
using device_store = ngemb::table_store<ngemb::bf16, ngemb::device_policy>;

struct batch_spec {
  const char* name;
  std::size_t tokens;
};

constexpr std::array<batch_spec, 4> batches{{{"decode_B1", 1}, {"decode_B64", 64}, {"decode_B256", 256},
                                             {"prefill_4096", 4096}}};

/// Lite's sub-table shape with m_base = 2^19.
ngemb::ngram_config resident_config() {
  ngemb::ngram_config config = ngemb_bench::bench_config();
  config.m_base = std::int64_t{1} << 19;
  return config;
}

/// Reads 16-byte words of `words` with a grid-stride loop; the xor of all of them reaches `sink` only when it is a
/// value random data never gives, so no load can be dropped and nothing is written.
__global__ void read_mapped_kernel(const uint4* words, std::size_t count, uint4* sink) {
  uint4 mixed{0, 0, 0, 0};
  for (std::size_t index = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; index < count;
       index += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const uint4 word = words[index];
    mixed.x ^= word.x;
    mixed.y ^= word.y;
    mixed.z ^= word.z;
    mixed.w ^= word.w;
  }
  if (mixed.x == 0x9e3779b9u && mixed.y == 0x7f4a7c15u && mixed.z == 0xf39cc060u && mixed.w == 0x5cedc834u) {
    *sink = mixed;
  }
}

/// The stream, its timer, both stores (same rows), the id pool, the floor's buffer and the setup medians; built on
/// first use and destroyed explicitly at the end of main, while the CUDA context is still alive.
class store_state {
 public:
  static constexpr std::size_t floor_bytes = std::size_t{1} << 30;
  static constexpr std::size_t pool_tokens = 32768;

  store_state()
      : config_(resident_config()),
        row_bytes_(gathered_per_token() * sizeof(ngemb::bf16)) {
    NGEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    policy_ = ngemb::device_policy{stream_};
    resident_store::tables_type host_tables(policy_, config_, /*with_base=*/false);
    device_ = std::make_unique<device_store>(policy_, config_, /*with_base=*/false);
    for (int table = 0; table < config_.num_tables(); ++table) {
      const ngemb::view<ngemb::bf16> rows = host_tables.table(table);
      ngemb_bench::fill_random(ngemb::host_policy{0}, rows, 100 + static_cast<std::uint64_t>(table), 1.0f);
      copy_to(policy_, ngemb::view<const ngemb::bf16>(rows), device_->table(table));
    }
    synchronize(policy_);
    resident_ = std::make_unique<resident_store>(std::move(host_tables));
    std::mt19937 random(2024);
    std::vector<std::uint32_t> ids;
    for (std::size_t token = 0; token < pool_tokens; ++token) {
      for (int table = 0; table < config_.num_tables(); ++table) {
        ids.push_back(static_cast<std::uint32_t>(random() % static_cast<std::uint32_t>(config_.modulus(table))));
      }
    }
    ids_ = ngemb::upload(policy_, ngemb::view<const std::uint32_t>(ids));
    gathered_ = ngemb::device_buffer<float>(policy_, batches.back().tokens * gathered_per_token());
    floor_words_ = ngemb::mapped_host_buffer<uint4>(floor_bytes / sizeof(uint4));
    std::memset(floor_words_.data(), 0x5a, floor_bytes);
    sink_ = ngemb::device_buffer<uint4>(policy_, 1);
    verify();
    auto floor = [this] { read_floor(); };
    floor_bandwidth_ = static_cast<double>(floor_bytes) /
                       ngemb_bench::median_seconds([&](long calls) { return timer_.seconds(stream_, floor, calls); });
    for (std::size_t index = 0; index < batches.size(); ++index) {
      auto gather = [this, index] { gather_device(index); };
      device_seconds_[index] =
          ngemb_bench::median_seconds([&](long calls) { return timer_.seconds(stream_, gather, calls); });
    }
  }

  store_state(const store_state&) = delete;
  store_state& operator=(const store_state&) = delete;
  ~store_state() {
    resident_.reset();  // stream-ordered buffers go before their stream
    device_.reset();
    ids_ = {};
    gathered_ = {};
    sink_ = {};
    cudaStreamSynchronize(stream_);  // failures cannot be reported from a destructor
    cudaStreamDestroy(stream_);
  }

  void gather_resident(std::size_t batch) { gather(*resident_, batch); }
  void gather_device(std::size_t batch) { gather(*device_, batch); }

  void read_floor() {
    const int blocks = ngemb::detail::current_multiprocessor_count() * 8;
    read_mapped_kernel<<<blocks, 256, 0, stream_>>>(floor_words_.device_data(), floor_words_.size(), sink_.data());
    NGEMB_CUDA_CHECK(cudaGetLastError());
  }

  template <class Run>
  double time_on_stream(Run& run, long calls) {
    return timer_.seconds(stream_, run, calls);
  }

  [[nodiscard]] std::size_t row_bytes_per_token() const { return row_bytes_; }
  [[nodiscard]] double floor_bandwidth() const { return floor_bandwidth_; }
  [[nodiscard]] double device_seconds(std::size_t batch) const { return device_seconds_[batch]; }

 private:
  [[nodiscard]] std::size_t gathered_per_token() const {
    return static_cast<std::size_t>(config_.num_tables() * config_.row_width());
  }

  /// The gather of the next pool batch of `batches[index]`, exactly as detail::embed_hashed runs it.
  template <class Store>
  void gather(const Store& store, std::size_t index) {
    const std::size_t tokens = batches[index].tokens;
    const std::size_t first = cursor_[index];
    cursor_[index] = (first + tokens) % (pool_tokens - pool_tokens % tokens);
    ngemb::detail::gather_rows(policy_, store, ids_.data() + first * static_cast<std::size_t>(config_.num_tables()),
                               tokens, gathered_.as_view());
  }

  /// Both stores must gather the same values for a prefill batch, else the benchmark measures a wrong path.
  void verify() {
    const std::size_t size = batches.back().tokens * gathered_per_token();
    std::vector<float> resident(size);
    std::vector<float> device(size);
    gather_resident(batches.size() - 1);
    copy_to_host(policy_, ngemb::view<const float>(gathered_.data(), size), ngemb::view<float>(resident));
    cursor_.back() = 0;
    gather_device(batches.size() - 1);
    copy_to_host(policy_, ngemb::view<const float>(gathered_.data(), size), ngemb::view<float>(device));
    cursor_.back() = 0;
    if (resident != device) {
      ngemb_bench::fail_setup("host-resident and device-resident gathers differ");
    }
  }

  ngemb::ngram_config config_;
  std::size_t row_bytes_;
  cudaStream_t stream_ = nullptr;
  ngemb_bench::stream_timer timer_;
  ngemb::device_policy policy_;
  std::unique_ptr<resident_store> resident_;
  std::unique_ptr<device_store> device_;
  ngemb::device_buffer<std::uint32_t> ids_;
  ngemb::device_buffer<float> gathered_;
  ngemb::mapped_host_buffer<uint4> floor_words_;
  ngemb::device_buffer<uint4> sink_;
  std::array<std::size_t, batches.size()> cursor_{};
  std::array<double, batches.size()> device_seconds_{};
  double floor_bandwidth_ = 0;
};

std::unique_ptr<store_state> state_holder;

store_state& store_at() {
  if (!state_holder) {
    state_holder = std::make_unique<store_state>();
  }
  return *state_holder;
}

void run_gather(benchmark::State& state, std::size_t index, bool resident) {
  try {
    store_state& gpu = store_at();
    auto run = [&gpu, index, resident] {
      if (resident) {
        gpu.gather_resident(index);
      } else {
        gpu.gather_device(index);
      }
    };
    double total = 0;
    for (auto _ : state) {
      const double seconds = gpu.time_on_stream(run, 1);
      state.SetIterationTime(seconds);
      total += seconds;
    }
    const double per_iteration = total / static_cast<double>(state.iterations());
    const auto tokens = static_cast<double>(batches[index].tokens);
    const auto bytes = tokens * static_cast<double>(gpu.row_bytes_per_token());
    state.counters["tokens_per_second"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["bus_bytes_per_token"] = benchmark::Counter(static_cast<double>(gpu.row_bytes_per_token()));
    state.counters["GB_per_s"] = benchmark::Counter(bytes / per_iteration / 1e9);
    state.counters["vs_pcie_floor"] = benchmark::Counter(per_iteration / (bytes / gpu.floor_bandwidth()));
    state.counters["vs_device"] = benchmark::Counter(per_iteration / gpu.device_seconds(index));
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
  } catch (const ngemb::error& failure) {  // CUDA failures and library errors end this benchmark, not the run
    state.SkipWithError(failure.what());
  }
}

void BM_store_pcie_read_floor_1GiB(benchmark::State& state) {
  try {
    store_state& gpu = store_at();
    auto read = [&gpu] { gpu.read_floor(); };
    double total = 0;
    for (auto _ : state) {
      const double seconds = gpu.time_on_stream(read, 1);
      state.SetIterationTime(seconds);
      total += seconds;
    }
    const double per_iteration = total / static_cast<double>(state.iterations());
    state.counters["GB_per_s_setup"] = benchmark::Counter(gpu.floor_bandwidth() / 1e9);
    const auto bytes = static_cast<double>(store_state::floor_bytes);
    state.counters["GB_per_s"] = benchmark::Counter(bytes / per_iteration / 1e9);
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(store_state::floor_bytes));
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
  benchmark::RegisterBenchmark("BM_store_pcie_read_floor_1GiB", BM_store_pcie_read_floor_1GiB)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  for (std::size_t index = 0; index < batches.size(); ++index) {
    for (const bool resident : {true, false}) {
      const std::string name = std::string("BM_store_") + (resident ? "host_resident" : "device") + "_gather_" +
                               batches[index].name;
      benchmark::RegisterBenchmark(name.c_str(),
                                   [index, resident](benchmark::State& state) { run_gather(state, index, resident); })
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
  state_holder.reset();
  return 0;
}
