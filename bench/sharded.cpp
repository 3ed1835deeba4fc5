// bench_sharded: sharded_store's two lookups over MPI ranks, against the unsharded store in the same run.
//   mpirun -np 1|2|4 [--oversubscribe --allow-run-as-root] bench_sharded [--benchmark_filter=...]
//
// Shape: LongCat-Flash-Lite's T = 12 sub-tables of d = 256 bf16 values and H = 3072, with m_i = 2^18 + 2i + 1 rows
// (12 x 262K x 512 B = 1.6 GB in all, split over the ranks). Rows hold a cheap function of (sub-table, row, column),
// so each rank fills its own shard without building the others. Ids are uniform per sub-table (what the hash
// gives), the next batch of a 32768-token pool per iteration (200 MB of rows: no cache keeps them).
//
// Per batch (decode 1, 64, 256 tokens, a 4096-token prefill):
// - lookup/all_to_all: the rows of each rank's own batch (different on every rank) through the all-to-all, against
//   rank 0 gathering the same number of tokens from the whole table set alone (`vs_unsharded`);
// - branch/all_to_all and branch/partial_projection: the projected n-gram branch [tokens x H] (lookup + fused GEMM
//   with W_cat, fp32), against rank 0's unsharded gather + GEMM. all_to_all: each rank its own batch (so the ranks
//   together embed ranks x B tokens per step); partial_projection: every rank the same batch (each projects the
//   columns of its sub-tables, then an all-reduce of [tokens x H] fp32).
// Counters: tokens_per_s (per rank), exchanged_B_per_token (bytes this rank sent plus received per token of its
// batch; the unsharded store exchanges none and reads T x d x 2 = 6144 B of rows), vs_unsharded (time of the
// unsharded baseline / time here). Rank 0 prints; the others run the same iterations in lockstep (fixed iteration
// counts: every rank must call every collective). Each rank runs max(1, cores / ranks) threads, the baseline too.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ngemb/comm/mpi_communicator.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/embed/detail/embedding_pipeline.hpp"
#include "ngemb/embed/fused_projection.hpp"
#include "ngemb/store/sharded_store.hpp"
#include "ngemb/store/table_store.hpp"

#include "host_timing.hpp"
#include "median.hpp"

namespace {

using ngemb::bf16;
using local_store = ngemb::table_store<bf16>;
using store_type = ngemb::sharded_store<local_store, ngemb::mpi_communicator>;
using projection_type = ngemb::fused_projection<float>;

constexpr std::size_t pool_tokens = 32768;
constexpr std::size_t batches[] = {1, 64, 256, 4096};

ngemb::ngram_config bench_config() {
  ngemb::ngram_config config = ngemb::ngram_config::longcat_flash_lite();
  config.ratio.reset();
  config.m_base = std::int64_t{1} << 18;
  return config;
}

/// Row values: a few bits of (table, row, column) mixed, in [-1, 1).
float row_value(int table, std::int64_t row, std::int64_t column) {
  std::uint64_t x = (static_cast<std::uint64_t>(table) << 40) ^ (static_cast<std::uint64_t>(row) << 9) ^
                    static_cast<std::uint64_t>(column);
  x *= 0x9E3779B97F4A7C15ULL;
  x ^= x >> 29;
  return static_cast<float>(x >> 40) / static_cast<float>(1ULL << 23) - 1.0f;
}

/// The store holding `ranges` of every sub-table, filled with row_value.
local_store make_store(const ngemb::ngram_config& config, const std::vector<ngemb::row_range>& ranges) {
  local_store store(ngemb::host_policy{}, config, std::span<const ngemb::row_range>(ranges), false);
  const std::int64_t width = config.row_width();
  for (int table = 0; table < config.num_tables(); ++table) {
    const ngemb::row_range range = ranges[static_cast<std::size_t>(table)];
    bf16* rows = store.table(table).data();
    for (std::int64_t row = 0; row < range.count; ++row) {
      for (std::int64_t column = 0; column < width; ++column) {
        rows[row * width + column] = bf16(row_value(table, range.first + row, column));
      }
    }
  }
  return store;
}

std::vector<std::uint32_t> id_pool(const ngemb::ngram_config& config, unsigned seed) {
  std::mt19937 random(seed);
  std::vector<std::uint32_t> ids;
  ids.reserve(pool_tokens * static_cast<std::size_t>(config.num_tables()));
  for (std::size_t token = 0; token < pool_tokens; ++token) {
    for (int table = 0; table < config.num_tables(); ++table) {
      ids.push_back(static_cast<std::uint32_t>(random() % static_cast<std::uint32_t>(config.modulus(table))));
    }
  }
  return ids;
}

projection_type make_projection(const ngemb::ngram_config& config) {
  std::mt19937 random(5);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<std::vector<float>> weights(static_cast<std::size_t>(config.num_tables()));
  std::vector<ngemb::view<const float>> views;
  for (auto& weight : weights) {
    weight.resize(static_cast<std::size_t>(config.hidden_size * config.row_width()));
    std::generate(weight.begin(), weight.end(), [&] { return normal(random); });
    views.emplace_back(weight);
  }
  return projection_type(ngemb::host_policy{},
                         ngemb::projection_shape{config.num_tables(), config.row_width(), config.hidden_size},
                         std::span<const ngemb::view<const float>>(views));
}

/// Everything a benchmark needs, built once per process.
struct setup {
  ngemb::ngram_config config = bench_config();
  ngemb::host_policy policy;
  ngemb::mpi_communicator communicator{MPI_COMM_WORLD, std::chrono::minutes(10)};  // ranks build tables at own pace
  std::unique_ptr<store_type> store;
  std::unique_ptr<projection_type> projection;
  std::vector<std::uint32_t> own_ids;     ///< this rank's pool (all_to_all: a batch of its own)
  std::vector<std::uint32_t> shared_ids;  ///< the same pool on every rank (partial projection)
  std::vector<float> gathered;
  std::vector<float> branch;
  double unsharded_lookup_seconds[std::size(batches)] = {};
  double unsharded_branch_seconds[std::size(batches)] = {};

  setup() {
    const int ranks = communicator.size();
    policy = ngemb::host_policy{std::max(1U, std::thread::hardware_concurrency() / static_cast<unsigned>(ranks))};
    projection = std::make_unique<projection_type>(make_projection(config));
    own_ids = id_pool(config, 1000U + static_cast<unsigned>(communicator.rank()));
    shared_ids = id_pool(config, 999U);
    const std::size_t largest = batches[std::size(batches) - 1];
    gathered.resize(largest * static_cast<std::size_t>(projection->input_width()));
    branch.resize(largest * static_cast<std::size_t>(config.hidden_size));
    if (communicator.rank() == 0) {
      measure_unsharded();  // alone: the other ranks wait at the barrier below without touching memory
    }
    communicator.barrier();
    const std::vector<ngemb::row_range> mine = store_type::ranges_of(config, communicator.rank(), ranks);
    store = std::make_unique<store_type>(config, make_store(config, mine), communicator);
    communicator.barrier();
  }

  [[nodiscard]] ngemb::view<const std::uint32_t> batch_ids(const std::vector<std::uint32_t>& pool, std::size_t batch,
                                                           std::size_t iteration) const {
    const std::size_t per_pool = pool_tokens / batch;
    const std::size_t start = (iteration % per_pool) * batch * static_cast<std::size_t>(config.num_tables());
    return {pool.data() + start, batch * static_cast<std::size_t>(config.num_tables())};
  }

  /// Rank 0's baselines: the whole table set in one process, gathered (and projected) for each batch size.
  void measure_unsharded() {
    std::vector<ngemb::row_range> all;
    for (int table = 0; table < config.num_tables(); ++table) {
      all.push_back({0, config.modulus(table)});
    }
    const local_store whole = make_store(config, all);
    for (std::size_t index = 0; index < std::size(batches); ++index) {
      const std::size_t batch = batches[index];
      std::size_t iteration = 0;
      const auto gather = [&] {
        const auto ids = batch_ids(own_ids, batch, iteration++);
        ngemb::detail::gather_rows(policy, whole, ids.data(), batch,
                                   ngemb::view<float>(gathered.data(), batch * static_cast<std::size_t>(
                                                                                    projection->input_width())));
      };
      const auto gather_and_project = [&] {
        gather();
        projection->project(policy, batch,
                            ngemb::view<const float>(gathered.data(),
                                                     batch * static_cast<std::size_t>(projection->input_width())),
                            ngemb::view<float>(branch.data(), batch * static_cast<std::size_t>(config.hidden_size)));
      };
      unsharded_lookup_seconds[index] =
          ngemb_bench::median_seconds([&](long calls) { return ngemb_bench::time_calls(gather, calls); });
      unsharded_branch_seconds[index] = ngemb_bench::median_seconds(
          [&](long calls) { return ngemb_bench::time_calls(gather_and_project, calls); });
    }
  }
};

setup& shared_setup() {
  static setup instance;
  return instance;
}

enum class work { lookup, branch_all_to_all, branch_partial };

void run(benchmark::State& state, work kind, std::size_t index) {
  setup& bench = shared_setup();
  const std::size_t batch = batches[index];
  store_type& store = *bench.store;
  store.set_options({.lookup = kind == work::branch_partial ? ngemb::sharded_lookup::partial_projection
                                                            : ngemb::sharded_lookup::all_to_all});
  const auto gathered = ngemb::view<float>(bench.gathered.data(),
                                           batch * static_cast<std::size_t>(bench.projection->input_width()));
  const auto branch = ngemb::view<float>(bench.branch.data(), batch * static_cast<std::size_t>(bench.config.hidden_size));
  const std::vector<std::uint32_t>& pool = kind == work::branch_partial ? bench.shared_ids : bench.own_ids;
  std::size_t iteration = 0;
  bench.communicator.barrier();
  store.communicator().reset_counters();
  const auto start = ngemb_bench::clock_type::now();
  for (auto _ : state) {
    const auto ids = bench.batch_ids(pool, batch, iteration++);
    if (kind == work::lookup) {
      store.lookup(bench.policy, ids, batch, gathered);
    } else {
      store.project(bench.policy, ids, batch, *bench.projection, branch);
    }
    benchmark::DoNotOptimize(bench.branch.data());
    benchmark::ClobberMemory();
  }
  const double per_iteration = ngemb_bench::seconds_since(start) / static_cast<double>(state.iterations());
  const ngemb::communication_counters counters = store.communicator().counters();
  const double tokens = static_cast<double>(batch) * static_cast<double>(state.iterations());
  const double baseline =
      kind == work::lookup ? bench.unsharded_lookup_seconds[index] : bench.unsharded_branch_seconds[index];
  state.counters["ranks"] = bench.communicator.size();
  state.counters["tokens_per_s"] = static_cast<double>(batch) / per_iteration;
  state.counters["exchanged_B_per_token"] =
      static_cast<double>(counters.bytes_sent + counters.bytes_received) / tokens;
  state.counters["vs_unsharded"] = baseline / per_iteration;
}

/// Ranks other than 0 run the benchmarks silently.
class silent_reporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context& /*context*/) override { return true; }
  void ReportRuns(const std::vector<Run>& /*runs*/) override {}
};

void register_benchmarks() {
  const char* names[] = {"lookup/all_to_all", "branch/all_to_all", "branch/partial_projection"};
  for (const work kind : {work::lookup, work::branch_all_to_all, work::branch_partial}) {
    for (std::size_t index = 0; index < std::size(batches); ++index) {
      const std::size_t batch = batches[index];
      const std::string name = std::string(names[static_cast<int>(kind)]) + "/tokens:" + std::to_string(batch);
      // Fixed iterations: the ranks must agree on how many collectives they call. About 0.2-1 s each here.
      const long iterations = kind == work::lookup ? (batch >= 4096 ? 20 : batch >= 256 ? 200 : 500)
                                                   : (batch >= 4096 ? 2 : batch >= 256 ? 10 : batch >= 64 ? 30 : 200);
      benchmark::RegisterBenchmark(name.c_str(), [kind, index](benchmark::State& state) { run(state, kind, index); })
          ->Iterations(iterations)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  ngemb::mpi_session session(&argc, &argv);
  benchmark::Initialize(&argc, argv);
  register_benchmarks();
  setup& bench = shared_setup();
  if (bench.communicator.rank() == 0) {
    std::printf("bench_sharded: %d ranks, %u threads each; unsharded baselines measured by rank 0 alone\n",
                bench.communicator.size(), bench.policy.threads);
    benchmark::RunSpecifiedBenchmarks();
  } else {
    silent_reporter silent;
    benchmark::RunSpecifiedBenchmarks(&silent);
  }
  benchmark::Shutdown();
  return 0;
}
