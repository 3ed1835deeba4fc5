// Host decode attention at LongCat-Flash-Lite's shape: one sublayer's forward (projections included) for a decode
// step of B sequences that each hold C cached positions and take one new token, under ngemb::host_policy{0}.
//   mla_absorbed/{C}/{B}  mla_attention, absorbed form (kv_b_proj folded into the query and the output): H = 3072,
//                         32 heads, q_lora 1536, kv_lora 512, rope 64, nope 128, v 128; fp32 latent cache
//   mla_expanded/{C}/{B}  the same layer, expanded form (kv_b_proj expands k_nope and v of every cached position)
//   gqa/{C}/{B}           ngemb::attention of the same width: 32 query heads of 128 (the MLA's value width),
//                         8 KV heads; fp32 K/V cache
// Counters:
//   cache_bytes   bytes of cache a step must read once: MLA B x (C + 1) x (512 + 64) x 4, GQA B x (C + 1) x 8 x
//                 128 x 2 x 4
//   weight_bytes  the layer's projection weights (every step reads them once)
//   vs_memcpy     step time / the time std::memcpy takes to copy cache_bytes (bandwidth of a 1 GiB memcpy over the
//                 same threads, read + write, measured in the same run)
//   vs_floor      step time / the time to read cache_bytes + weight_bytes once at that bandwidth
// Caches are filled with random values directly (a 32k prefill through the layer would dominate the run), and each
// step is truncated away again so the context stays C. Combinations beyond what a shared 2-core machine affords
// (~3 minutes in all, a few GB of memory) are skipped with a message: absorbed above B x C = 2^19 cached positions
// (35 kFMA each), GQA above 2^17 (its fp32 K/V would take 4 GiB at 2^19), expanded above 2^14 (it runs kv_b_proj
// over every cached position: 4.2 MFMA each).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "host_timing.hpp"
#include "ngemb/model/attention.hpp"
#include "ngemb/model/mla_attention.hpp"

namespace {

const ngemb::host_policy all_threads{0};

double bandwidth() {
  static const double measured = ngemb_bench::memcpy_floor(all_threads).bandwidth();
  return measured;
}

ngemb::mla_shape lite_mla() {
  return {.hidden = 3072, .heads = 32, .q_lora_rank = 1536, .kv_lora_rank = 512, .qk_nope_head_dim = 128,
          .qk_rope_head_dim = 64, .v_head_dim = 128, .rope_theta = 5000000.0};
}

constexpr ngemb::attention_shape lite_gqa{3072, 32, 8, 128, 5000000.0};

/// Uniform values in [-1, 1) from a counter hash (fast enough to fill gigabytes).
float hashed_value(std::uint64_t index) {
  index = (index ^ (index >> 31)) * 0x7fb5d329728ea185ULL;
  index = (index ^ (index >> 27)) * 0x81dadef4bc2dd44dULL;
  return static_cast<float>(index >> 40) / static_cast<float>(1ULL << 23) - 1.0f;
}

std::vector<float> random_vector(std::size_t size, std::uint64_t seed, float scale) {
  std::vector<float> values(size);
  for (std::size_t i = 0; i < size; ++i) {
    values[i] = hashed_value(seed * 0x9e3779b97f4a7c15ULL + i) * scale;
  }
  return values;
}

void fill(float* data, std::size_t size, std::uint64_t seed) {
  ngemb::for_each_n(all_threads, size, [=](std::size_t i) { data[i] = hashed_value(seed + i); });
}

ngemb::mla_attention<> make_mla(const ngemb::mla_shape& shape) {
  std::vector<std::vector<float>> storage;
  ngemb::mla_weights weights;
  const auto make = [&](ngemb::view<const float>& target, std::size_t rows, std::size_t columns) {
    storage.push_back(random_vector(rows * columns, storage.size() + 1, 1.0f / std::sqrt(static_cast<float>(columns))));
    target = ngemb::view<const float>(storage.back());
  };
  storage.reserve(8);
  const std::size_t query = 32 * 192;
  make(weights.q_a_proj, 1536, 3072);
  make(weights.q_b_proj, query, 1536);
  make(weights.kv_a_proj_with_mqa, 576, 3072);
  make(weights.kv_b_proj, 32 * 256, 512);
  make(weights.o_proj, 3072, 32 * 128);
  std::vector<float> ones_q(1536, 1.0f);
  std::vector<float> ones_kv(512, 1.0f);
  weights.q_a_layernorm = ngemb::view<const float>(ones_q);
  weights.kv_a_layernorm = ngemb::view<const float>(ones_kv);
  return ngemb::mla_attention<>(all_threads, shape, weights);
}

ngemb::attention<> make_gqa() {
  const std::size_t query = 32 * 128;
  const std::size_t kv = 8 * 128;
  const auto q = random_vector(query * 3072, 11, 1.0f / std::sqrt(3072.0f));
  const auto k = random_vector(kv * 3072, 12, 1.0f / std::sqrt(3072.0f));
  const auto v = random_vector(kv * 3072, 13, 1.0f / std::sqrt(3072.0f));
  const auto o = random_vector(3072 * query, 14, 1.0f / std::sqrt(4096.0f));
  return ngemb::attention<>(all_threads, lite_gqa,
                            {.q = ngemb::view<const float>(q), .k = ngemb::view<const float>(k),
                             .v = ngemb::view<const float>(v), .o = ngemb::view<const float>(o)});
}

/// Slots 0..batch-1 of `cache` at `context` positions each (lengths advanced by an empty step).
template <class Cache>
std::vector<std::int32_t> occupy(Cache& cache, std::size_t batch, std::int64_t context) {
  std::vector<std::int32_t> slots;
  for (std::size_t s = 0; s < batch; ++s) {
    slots.push_back(cache.allocate());
  }
  const std::vector<std::int64_t> sizes(batch, context);
  cache.begin(all_threads, ngemb::view<const std::int32_t>(slots), ngemb::view<const std::int64_t>(sizes));
  cache.commit();
  return slots;
}

/// Times decode steps of `layer` over `cache`; each step is truncated away after it ran.
template <class Layer, class Cache>
void run_decode(benchmark::State& bench, Layer& layer, Cache& cache, std::size_t batch, std::int64_t context,
                double cache_bytes, double weight_bytes) {
  const std::vector<std::int32_t> slots = occupy(cache, batch, context);
  const std::vector<std::int64_t> ones(batch, 1);
  const auto x = random_vector(batch * 3072, 99, 1.0f);
  std::vector<float> out(x.size());
  const auto step = [&] {
    cache.begin(all_threads, ngemb::view<const std::int32_t>(slots), ngemb::view<const std::int64_t>(ones));
    layer.forward(all_threads, cache, 0, ngemb::view<const float>(x), ngemb::view<float>(out));
    cache.commit();
    for (const std::int32_t slot : slots) {
      cache.truncate(slot, context);
    }
    benchmark::DoNotOptimize(out.data());
  };
  step();  // grows the workspaces
  double seconds = 0;
  for (auto _ : bench) {
    const auto start = ngemb_bench::clock_type::now();
    step();
    seconds += ngemb_bench::seconds_since(start);
  }
  const double per_step = seconds / static_cast<double>(bench.iterations());
  bench.counters["cache_bytes"] = cache_bytes;
  bench.counters["weight_bytes"] = weight_bytes;
  bench.counters["vs_memcpy"] = per_step / (2.0 * cache_bytes / bandwidth());
  bench.counters["vs_floor"] = per_step / ((cache_bytes + weight_bytes) / bandwidth());
}

constexpr double mla_weight_bytes = (1536.0 * 3072 + 6144.0 * 1536 + 576.0 * 3072 + 8192.0 * 512 + 3072.0 * 4096) * 4;
constexpr double gqa_weight_bytes = (4096.0 * 3072 + 2.0 * 1024 * 3072 + 3072.0 * 4096) * 4;
constexpr std::int64_t absorbed_position_limit = std::int64_t{1} << 19;
constexpr std::int64_t gqa_position_limit = std::int64_t{1} << 17;
constexpr std::int64_t expanded_position_limit = std::int64_t{1} << 14;

void mla(benchmark::State& bench, ngemb::mla_form form) {
  const auto context = bench.range(0);
  const auto batch = static_cast<std::size_t>(bench.range(1));
  const std::int64_t work = context * static_cast<std::int64_t>(batch);
  if (work > (form == ngemb::mla_form::expanded ? expanded_position_limit : absorbed_position_limit)) {
    bench.SkipWithError(("skipped: " + std::to_string(work) + " cached positions exceed this form's budget for a "
                         "~3-minute 2-core run").c_str());
    for (auto _ : bench) {
    }
    return;
  }
  static ngemb::mla_attention<> layer = make_mla(lite_mla());
  layer.set_form(form);
  auto cache = ngemb::mla_attention<>::make_cache(all_threads, lite_mla(), 1, batch, context + 1);
  const ngemb::detail::latent_storage<float> storage = cache.storage();
  fill(storage.values, cache.stored_values(), 7);
  const double cache_bytes = static_cast<double>(batch) * static_cast<double>(context + 1) * 576.0 * 4.0;
  run_decode(bench, layer, cache, batch, context, cache_bytes, mla_weight_bytes);
}

void gqa(benchmark::State& bench) {
  const auto context = bench.range(0);
  const auto batch = static_cast<std::size_t>(bench.range(1));
  if (context * static_cast<std::int64_t>(batch) > gqa_position_limit) {
    bench.SkipWithError("skipped: the cached positions exceed the time and memory budget of a 2-core run");
    for (auto _ : bench) {
    }
    return;
  }
  static ngemb::attention<> layer = make_gqa();
  ngemb::kv_cache<> cache(all_threads, 1, lite_gqa.kv_heads, lite_gqa.head_dim, batch, context + 1);
  const ngemb::detail::kv_storage storage = cache.storage();
  const std::size_t elements = batch * static_cast<std::size_t>(context + 1) * 8 * 128;
  fill(storage.keys, elements, 7);
  fill(storage.values, elements, 8);
  const double cache_bytes = static_cast<double>(elements) * 2.0 * 4.0;
  run_decode(bench, layer, cache, batch, context, cache_bytes, gqa_weight_bytes);
}

void shapes(benchmark::internal::Benchmark* bench) {
  for (const std::int64_t context : {1024, 8192, 32768}) {
    for (const std::int64_t batch : {1, 16, 64}) {
      bench->Args({context, batch});
    }
  }
  bench->ArgNames({"context", "batch"})->Unit(benchmark::kMillisecond)->MinTime(0.2)->UseRealTime();
}

}  // namespace

BENCHMARK_CAPTURE(mla, absorbed, ngemb::mla_form::absorbed)->Apply(shapes);
BENCHMARK_CAPTURE(mla, expanded, ngemb::mla_form::expanded)->Apply(shapes);
BENCHMARK(gqa)->Apply(shapes);

BENCHMARK_MAIN();
