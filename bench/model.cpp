// Host throughput of a whole causal_lm under ngemb::host_policy{0} (all hardware threads), for two models:
//   demo/...   the random demo model of examples/demo_model.hpp (4 LongCat shortcut layers, H = 256, GQA with 8 query
//              / 2 KV heads, 32 routed + 16 zero experts top-4 with bf16 weights, bf16 n-gram tables N = 4, K = 4
//              over V = 8192), prompts of random ids;
//   tiny/...   the shipped trained models/tiny-longcat (LongCat-Flash-Lite's layout: MLA with its latent cache, 16 +
//              8 experts, bf16 tables N = 4, K = 4 over bytes), prompts cut from its validation text.
// Benchmarks:
//   {demo,tiny}_decode/{B}   B sequences holding 256 tokens each take one new token (last-token logits), through
//                            the caches;
//   {demo,tiny}_prefill/{B}  B sequences of 256 tokens from an empty state.
// Counters: tokens_per_second;
//   vs_no_cache (decode) = the time of the same next-token logits without caches (each step runs every whole
//                sequence, 257 tokens, from an empty state, as generation without a KV cache must; its median is
//                taken at setup) / the decode time;
//   vs_floor   = time / (bytes the step must read / memcpy bandwidth): every dense parameter once (attention, dense
//                FFNs, routers, norms, lm_head, n-gram projections), the distinct routed experts the step chose,
//                the cache (fp32 K/V or latent rows) of every cached position, and each token's gathered embedding
//                rows; the bandwidth is a 1 GiB std::memcpy over the same threads (read + write bytes), measured in
//                the same run.
//   share_{embedding,attention,dense_ffn,moe,head} (decode) = each stage's share of 32 further steps timed per stage
//                (forward_options::profile, untimed by the benchmark), where the time left above the floor goes.
// A decode benchmark restarts its sequences (untimed) when they have grown by 64 tokens, so the context stays
// within 256..320 positions.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "demo_model.hpp"
#include "host_timing.hpp"
#include "ngemb/io/detail/safetensors_format.hpp"
#include "ngemb/model/parameter_count.hpp"
#include "ngemb/ngemb.hpp"

namespace {

const ngemb::host_policy all_threads{0};
constexpr std::int64_t context = 256;
constexpr std::int64_t regrowth = 64;

using demo_type = ngemb_examples::demo_model<ngemb::host_policy>;
using tiny_type = ngemb::presets::longcat_flash_lite<ngemb::host_policy>::model;

/// `count` prompts of `length` tokens: random ids of the demo's vocabulary, or slices of tiny-longcat's validation
/// text (real bytes, so the trained router sees what it was trained on).
template <class Model>
std::vector<std::vector<std::int32_t>> prompts(std::size_t count, std::int64_t length, unsigned seed);

template <>
std::vector<std::vector<std::int32_t>> prompts<demo_type>(std::size_t count, std::int64_t length, unsigned seed) {
  std::mt19937 engine(seed);
  std::uniform_int_distribution<std::int32_t> token(3, 8191);
  std::vector<std::vector<std::int32_t>> sequences(count);
  for (auto& sequence : sequences) {
    for (std::int64_t i = 0; i < length; ++i) {
      sequence.push_back(token(engine));
    }
  }
  return sequences;
}

template <>
std::vector<std::vector<std::int32_t>> prompts<tiny_type>(std::size_t count, std::int64_t length, unsigned seed) {
  std::ifstream file(std::filesystem::path(NGEMB_REFERENCE_DIR) / "tiny_longcat" / "validation.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const auto tokens = ngemb::byte_tokenizer::encode(text, false);
  if (tokens.size() < static_cast<std::size_t>(length)) {
    throw std::runtime_error("bench_model: tiny-longcat's validation text is missing or too short");
  }
  std::mt19937 engine(seed);
  std::uniform_int_distribution<std::size_t> start(0, tokens.size() - static_cast<std::size_t>(length));
  std::vector<std::vector<std::int32_t>> sequences(count);
  for (auto& sequence : sequences) {
    const auto first = tokens.begin() + static_cast<std::ptrdiff_t>(start(engine));
    sequence.assign(first, first + length);
  }
  return sequences;
}

demo_type make_model(std::type_identity<demo_type>) {
  return ngemb_examples::random_model(all_threads, ngemb_examples::demo_config(), 2026);
}

tiny_type make_model(std::type_identity<tiny_type>) {
  return tiny_type::load(all_threads, std::filesystem::path(NGEMB_MODELS_DIR) / "tiny-longcat", {.max_sequences = 8});
}

template <class Model>
struct model_state {
  double bandwidth = ngemb_bench::memcpy_floor(all_threads).bandwidth();
  Model model = make_model(std::type_identity<Model>{});
  double dense_bytes = 0;  ///< parameters every step reads whole (not the tables, not the experts)
  double expert_bytes = 0;  ///< one routed expert's gate, up and down weights
  double gathered_bytes_per_token = 0;
  double cache_bytes_per_position = 0;  ///< fp32 K/V or latent rows of every attention sublayer

  model_state() {
    ngemb::tensor_collection parameters(ngemb::tensor_collection::mode::names_only);
    model.collect(all_threads, parameters);
    for (const ngemb::tensor_to_write& tensor : parameters.entries()) {
      const bool table = tensor.name == "model.embed_tokens.weight" ||
                         tensor.name.starts_with("model.ngram_embeddings.embedders.");
      if (!table && tensor.name.find(".mlp.experts.") == std::string::npos) {
        dense_bytes += static_cast<double>(ngemb::detail::checked_element_count(tensor.shape).value()) *
                       static_cast<double>(ngemb::detail::safetensors_dtype_bits(tensor.dtype).value()) / 8.0;
      }
    }
    const auto& config = model.config();
    expert_bytes = 3.0 * static_cast<double>(config.expert_ffn_hidden_size * config.hidden_size()) * 2.0;
    gathered_bytes_per_token =
        2.0 * static_cast<double>(config.hidden_size() + config.ngram.num_tables() * config.ngram.row_width());
    cache_bytes_per_position = 4.0 * static_cast<double>(ngemb::cache_values_per_token(config)) *
                               static_cast<double>(ngemb::attention_sublayers(config));
  }
};

template <class Model>
model_state<Model>& state() {
  static model_state<Model> built;
  return built;
}

/// Runs ragged batches of the model's sequences `ids`, last-token logits into `logits`.
template <class Model>
struct batch_runner {
  Model& model;
  std::vector<std::int32_t> ids;
  std::vector<float> logits;

  batch_runner(Model& owner, std::size_t sequences)
      : model(owner), logits(sequences * static_cast<std::size_t>(owner.config().vocab_size())) {}

  void start() {
    for (std::size_t i = 0; i < logits.size() / static_cast<std::size_t>(model.config().vocab_size()); ++i) {
      ids.push_back(model.start_sequence());
    }
  }
  void end() {
    for (const std::int32_t id : ids) {
      model.end_sequence(id);
    }
    ids.clear();
  }
  void run(const std::vector<std::vector<std::int32_t>>& sequences, ngemb::stage_times* profile = nullptr) {
    std::vector<std::int32_t> tokens;
    std::vector<std::int64_t> offsets{0};
    for (const auto& sequence : sequences) {
      tokens.insert(tokens.end(), sequence.begin(), sequence.end());
      offsets.push_back(static_cast<std::int64_t>(tokens.size()));
    }
    model.forward(all_threads, ngemb::view<const std::int32_t>(ids),
                  ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(tokens),
                                                         ngemb::view<const std::int64_t>(offsets)),
                  ngemb::view<float>(logits), {.logits = ngemb::logits_for::last_token, .profile = profile});
    benchmark::DoNotOptimize(logits.data());
  }
};

/// Bytes a decode step of `sequences` tokens at `positions` cached positions each must read, after a step ran.
template <class Model>
double decode_floor_bytes(std::size_t sequences, std::int64_t positions) {
  model_state<Model>& built = state<Model>();
  double experts = 0;
  for (const auto& block : built.model.blocks()) {
    const ngemb::routing_statistics routing = block.moe().last_routing(all_threads);
    for (int expert = 0; expert < routing.routed_experts; ++expert) {
      experts += routing.load[static_cast<std::size_t>(expert)] > 0 ? 1.0 : 0.0;
    }
  }
  const double cache = static_cast<double>(sequences) * static_cast<double>(positions) * built.cache_bytes_per_position;
  return built.dense_bytes + experts * built.expert_bytes + cache +
         static_cast<double>(sequences) * built.gathered_bytes_per_token;
}

template <class Model>
void decode(benchmark::State& bench, std::size_t sequences) {
  model_state<Model>& built = state<Model>();
  batch_runner<Model> runner(built.model, sequences);
  const auto prompt_tokens = prompts<Model>(sequences, context + 1, 7);
  std::vector<std::vector<std::int32_t>> prompt_rows, next;
  for (const auto& tokens : prompt_tokens) {
    prompt_rows.emplace_back(tokens.begin(), tokens.end() - 1);
    next.push_back({tokens.back()});
  }
  const auto restart = [&] {
    runner.end();
    runner.start();
    runner.run(prompt_rows);
  };
  // Baseline: the same next-token logits with no caches, every whole sequence from an empty state.
  auto no_cache = [&] {
    runner.end();
    runner.start();
    runner.run(prompt_tokens);
  };
  const double no_cache_seconds =
      ngemb_bench::median_seconds([&no_cache](long calls) { return ngemb_bench::time_calls(no_cache, calls); });
  restart();
  double floor_bytes = 0;
  double stepping = 0;  // seconds in the timed steps, not the restarts
  for (auto _ : bench) {
    const auto start = ngemb_bench::clock_type::now();
    runner.run(next);
    stepping += ngemb_bench::seconds_since(start);
    if (built.model.length(runner.ids[0]) >= context + regrowth) {
      bench.PauseTiming();
      floor_bytes = decode_floor_bytes<Model>(sequences, context + regrowth / 2);
      restart();
      bench.ResumeTiming();
    }
  }
  if (floor_bytes == 0) {
    floor_bytes = decode_floor_bytes<Model>(sequences, context + regrowth / 2);
  }
  restart();
  ngemb::stage_times stages;
  for (int step = 0; step < 32; ++step) {
    runner.run(next, &stages);
  }
  runner.end();
  const double per_step = stepping / static_cast<double>(bench.iterations());
  bench.counters["tokens_per_second"] = static_cast<double>(sequences) / per_step;
  bench.counters["vs_no_cache"] = no_cache_seconds / per_step;
  bench.counters["vs_floor"] = per_step / (floor_bytes / built.bandwidth);
  using ngemb::model_stage;
  for (const auto& [stage, name] : {std::pair{model_stage::embedding, "share_embedding"},
                                    std::pair{model_stage::attention, "share_attention"},
                                    std::pair{model_stage::dense_ffn, "share_dense_ffn"},
                                    std::pair{model_stage::moe, "share_moe"},
                                    std::pair{model_stage::norm_and_head, "share_head"}}) {
    bench.counters[name] = stages.share(stage);
  }
}

template <class Model>
void prefill(benchmark::State& bench, std::size_t sequences) {
  model_state<Model>& built = state<Model>();
  batch_runner<Model> runner(built.model, sequences);
  const auto prompt_rows = prompts<Model>(sequences, context, 9);
  for (auto _ : bench) {
    runner.start();
    runner.run(prompt_rows);
    runner.end();
  }
  using counter = benchmark::Counter;
  bench.counters["tokens_per_second"] =
      counter(static_cast<double>(sequences * context), counter::kIsIterationInvariantRate);
}

// BENCHMARK_CAPTURE names a function, not a template instance.
void demo_decode(benchmark::State& bench, std::size_t sequences) { decode<demo_type>(bench, sequences); }
void demo_prefill(benchmark::State& bench, std::size_t sequences) { prefill<demo_type>(bench, sequences); }
void tiny_decode(benchmark::State& bench, std::size_t sequences) { decode<tiny_type>(bench, sequences); }
void tiny_prefill(benchmark::State& bench, std::size_t sequences) { prefill<tiny_type>(bench, sequences); }

}  // namespace

BENCHMARK_CAPTURE(demo_decode, 1, 1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(demo_decode, 8, 8)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(demo_prefill, 4, 4)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(tiny_decode, 1, 1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(tiny_decode, 8, 8)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(tiny_prefill, 4, 4)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
