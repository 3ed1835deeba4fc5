// Speculative decoding on the shipped trained models/tiny-longcat with prompts cut from its validation text (real
// Python source), under ngemb::host_policy{0}. Each iteration is one generate() call of B prompts x 64 new tokens,
// greedy (mode 0) or sampled at README's settings (mode 1: temperature 0.6, top-p 0.9, seed 1); the baseline, plain
// decoding of the same prompts with the same options (one target forward per token), is timed in the same run at
// setup (median of repetitions).
// Benchmarks: {drafter}/{B}/{k}/{mode} for B = 1 and 4 sequences and k drafts per step:
//   lookup       prompt lookup (vLLM's n-gram proposer; no weights)
//   ngram        the n-gram embedding alone through the final norm and lm_head (paper §4.3)
//   mtp          the checkpoint's one-layer MTP module
//   self         the target itself as the draft model: every greedy draft is accepted, the upper bound
//   mtp_er/...   mtp with early rejection at P = 0.1; lookup_er likewise
// Counters: tokens_per_second (generated); vs_plain = plain decoding's time / this time (above 1: faster);
// accepted_length = tokens a sequence gains per verify forward; forwards_per_token = target forwards per generated
// token (1 for plain decoding); cut_share = drafts early rejection cut / drafts proposed; reused_rows = embedding
// rows the verify forwards took from drafting instead of computing, per generated token, and reuse_saving = the
// share of the run's time those rows would have cost (rows x the measured embedding time per computed row).
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "host_timing.hpp"
#include "ngemb/ngemb.hpp"

namespace {

const ngemb::host_policy all_threads{0};
using tiny_type = ngemb::presets::longcat_flash_lite<ngemb::host_policy>::model;
constexpr int new_tokens = 64;
constexpr int max_draft = 8;
const std::filesystem::path tiny_dir = std::filesystem::path(NGEMB_MODELS_DIR) / "tiny-longcat";

/// `count` prompts of 128 bytes of tiny-longcat's validation text, each after BOS.
std::vector<std::vector<std::int32_t>> text_prompts(std::size_t count) {
  std::ifstream file(std::filesystem::path(NGEMB_REFERENCE_DIR) / "tiny_longcat" / "validation.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (text.size() < 100000) {
    throw std::runtime_error("bench_speculative: tiny-longcat's validation text is missing or too short");
  }
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < count; ++i) {
    prompts.push_back(ngemb::byte_tokenizer::encode(text.substr(15013 * (i + 1) % (text.size() - 200), 128)));
  }
  return prompts;
}

struct models {
  tiny_type target =
      tiny_type::load(all_threads, tiny_dir, {.max_sequences = 4, .max_draft = max_draft}, {.mtp = true});
  tiny_type self_draft = tiny_type::load(all_threads, tiny_dir, {.max_sequences = 4, .max_draft = max_draft});
};

models& loaded() {
  static models built;
  return built;
}

enum class drafter_kind { lookup, ngram, mtp, self };

/// The drafter of a benchmark over the loaded target, with early rejection over it when asked.
struct bench_drafter {
  std::optional<ngemb::prompt_lookup_drafter> lookup;
  std::optional<ngemb::ngram_embedding_drafter<tiny_type>> ngram;
  std::optional<ngemb::mtp_drafter<tiny_type>> mtp;
  std::optional<ngemb::draft_model_drafter<tiny_type>> self;
  std::optional<ngemb::early_rejection<ngemb::drafter_ref, tiny_type>> filter;
  ngemb::drafter_ref used;

  bench_drafter(drafter_kind kind, bool early_reject) {
    models& built = loaded();
    ngemb::drafter_ref inner;
    switch (kind) {
      case drafter_kind::lookup: inner = lookup.emplace(built.target.vocab_size()); break;
      case drafter_kind::ngram: inner = ngram.emplace(all_threads, built.target); break;
      case drafter_kind::mtp: inner = mtp.emplace(all_threads, built.target); break;
      case drafter_kind::self: inner = self.emplace(all_threads, built.self_draft); break;
    }
    used = early_reject ? ngemb::drafter_ref(filter.emplace(all_threads, built.target, inner, 0.1f)) : inner;
  }
};

/// Greedy (mode 0) or README's sampling (mode 1).
ngemb::sampling_options sampling_of(std::int64_t mode) {
  return mode == 0 ? ngemb::sampling_options{} : ngemb::sampling_options{.temperature = 0.6f, .top_p = 0.9f, .seed = 1};
}

ngemb::generation_result run(const std::vector<std::vector<std::int32_t>>& prompts, std::int64_t mode,
                             const ngemb::speculative_options& speculative, bool profile = false) {
  return ngemb::generate(all_threads, loaded().target, prompts,
                         {.max_new_tokens = new_tokens,
                          .sampling = sampling_of(mode),
                          .profile = profile,
                          .speculative = speculative});
}

void speculative(benchmark::State& bench, drafter_kind kind, bool early_reject) {
  const auto sequences = static_cast<std::size_t>(bench.range(0));
  const int k = static_cast<int>(bench.range(1));
  const std::int64_t mode = bench.range(2);
  const auto prompts = text_prompts(sequences);
  auto plain_run = [&prompts, mode] { benchmark::DoNotOptimize(run(prompts, mode, {}).tokens.data()); };
  const double plain_seconds =
      ngemb_bench::median_seconds([&plain_run](long calls) { return ngemb_bench::time_calls(plain_run, calls); });
  bench_drafter drafter(kind, early_reject);
  const ngemb::speculative_options options{.drafter = drafter.used, .draft_tokens = k};
  ngemb::generation_result last;
  const auto counts_before = loaded().target.embedding_counts();
  double elapsed = 0.0;
  for (auto _ : bench) {
    const auto start = ngemb_bench::clock_type::now();
    last = run(prompts, mode, options);
    elapsed += ngemb_bench::seconds_since(start);
  }
  const auto counts_after = loaded().target.embedding_counts();
  const ngemb::generation_result profiled = run(prompts, mode, options, true);  // untimed: the embedding's share
  const double generated = static_cast<double>(last.speculation.generated_tokens);
  const double per_run = elapsed / static_cast<double>(bench.iterations());
  bench.counters["tokens_per_second"] = generated / per_run;
  bench.counters["vs_plain"] = plain_seconds / per_run;
  bench.counters["accepted_length"] = last.speculation.mean_accepted_length();
  bench.counters["forwards_per_token"] = last.speculation.target_forwards_per_token();
  if (drafter.filter) {
    const auto cuts = drafter.filter->counts();
    bench.counters["cut_share"] =
        cuts.proposed == 0 ? 0.0 : static_cast<double>(cuts.cut) / static_cast<double>(cuts.proposed);
  }
  const double reused = static_cast<double>(counts_after.reused - counts_before.reused);
  const double computed = static_cast<double>(counts_after.computed - counts_before.computed);
  if (reused > 0 && computed > 0) {
    const double runs = static_cast<double>(bench.iterations());
    const double embedding_seconds_per_row =
        profiled.stages[ngemb::model_stage::embedding] / (computed / runs);
    const double run_seconds = profiled.prefill_seconds + profiled.decode_seconds;
    bench.counters["reused_rows"] = reused / runs / generated;
    bench.counters["reuse_saving"] = reused / runs * embedding_seconds_per_row / run_seconds;
  }
}

// BENCHMARK_CAPTURE names a function, not a template instance.
void plain(benchmark::State& bench) {
  const auto prompts = text_prompts(static_cast<std::size_t>(bench.range(0)));
  ngemb::generation_result last;
  for (auto _ : bench) {
    last = run(prompts, bench.range(1), {});
  }
  using counter = benchmark::Counter;
  bench.counters["tokens_per_second"] =
      counter(static_cast<double>(ngemb::detail::count_tokens(last.tokens)), counter::kIsIterationInvariantRate);
}

void apply_shapes(benchmark::internal::Benchmark* bench) {
  for (const int mode : {0, 1}) {
    for (const int sequences : {1, 4}) {
      for (const int k : {1, 3, 8}) {
        bench->Args({sequences, k, mode});
      }
    }
  }
  bench->ArgNames({"B", "k", "mode"})->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(plain)->ArgsProduct({{1, 4}, {0, 1}})->ArgNames({"B", "mode"})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(speculative, lookup, drafter_kind::lookup, false)->Apply(apply_shapes);
BENCHMARK_CAPTURE(speculative, ngram, drafter_kind::ngram, false)->Apply(apply_shapes);
BENCHMARK_CAPTURE(speculative, mtp, drafter_kind::mtp, false)->Apply(apply_shapes);
BENCHMARK_CAPTURE(speculative, self, drafter_kind::self, false)->Apply(apply_shapes);
BENCHMARK_CAPTURE(speculative, mtp_er, drafter_kind::mtp, true)->Apply(apply_shapes);
BENCHMARK_CAPTURE(speculative, lookup_er, drafter_kind::lookup, true)->Apply(apply_shapes);

BENCHMARK_MAIN();
