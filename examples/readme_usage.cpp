// readme_usage: the C++ blocks of README.md, compiled and run. Each block is a region of this file between
// "// [readme:<name>]" and "// [readme:end]"; the readme_snippets test fails when README.md and a region differ.
// The checkpoint the blocks load is written first: the demo model (demo_model.hpp), whose types are the README's.
//
//   readme_usage <scratch folder>     (emptied and filled: checkpoint/ and copy/)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <filesystem>
#include <type_traits>
#include <vector>

#include "demo_model.hpp"
#include "ngemb/ngemb.hpp"

namespace {

/// README "Using it": the n-gram ids of a ragged batch, then a speculative step through the n-gram cache.
void ids_and_cache(const std::filesystem::path& checkpoint) {
  // [readme:ids]
  const auto config = ngemb::read_ngram_config(checkpoint);    // or ngram_config::longcat_flash_lite()
  const ngemb::longcat_hash hasher(config);
  const ngemb::host_policy policy{0};                          // 0: all hardware threads

  // A ragged batch: tokens of all sequences back to back, sequence s at [offsets[s], offsets[s+1]).
  const std::vector<std::int32_t> tokens = {15, 2, 907, 31, 77};
  const std::vector<std::int64_t> offsets = {0, 3, 5};
  std::vector<std::int64_t> ids(tokens.size() * hasher.num_tables());  // K*(N-1) ids per token, table order
  const ngemb::ragged_view<const std::int32_t> batch(tokens, offsets);
  ngemb::hash_tokens(policy, hasher, batch, ngemb::view<std::int64_t>(ids));
  // [readme:end]

  // [readme:cache]
  ngemb::ngram_cache<> cache(policy, config, /*max_slots=*/64, /*max_draft=*/8);
  const std::vector<std::int32_t> slots = {cache.allocate(), cache.allocate()};  // one per sequence of the batch
  ngemb::hash_tokens(policy, hasher, cache, slots, batch, ngemb::view<std::int64_t>(ids));
  cache.advance(slots, batch);                                                      // prefill

  const std::vector<std::int32_t> draft_tokens = {31, 5, 9, 77, 12};                // 3 drafts, then 2
  const std::vector<std::int64_t> draft_offsets = {0, 3, 5};
  const ngemb::ragged_view<const std::int32_t> drafts(draft_tokens, draft_offsets);
  std::vector<std::int64_t> draft_ids(draft_tokens.size() * hasher.num_tables());  // sized for the drafts
  ngemb::hash_tokens(policy, hasher, cache, slots, drafts, ngemb::view<std::int64_t>(draft_ids));
  cache.append(slots, drafts);                                                      // draft tokens

  const std::vector<std::int32_t> accepted_counts = {2, 0};                         // what verification accepted
  cache.commit(slots, accepted_counts);
  cache.free(slots[0]);                                                             // requests done
  cache.free(slots[1]);
  // [readme:end]
}

/// README "Using it": the whole n-gram embedding of a prefill.
void embed_batch(const ngemb::host_policy& policy, const std::filesystem::path& checkpoint,
                 ngemb::ragged_view<const std::int32_t> batch) {
  // [readme:embedding]
  using embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::mmap_store<ngemb::bf16>>;
  auto embed = embedding::load(policy, checkpoint);                   // config.json + (sharded) safetensors, mmap'd
  std::vector<float> out(batch.num_values() * embed.output_width());  // [tokens x H], fp32 or bf16
  embed.forward(policy, batch, ngemb::view<float>(out));  // a prefill; decoding passes (cache, slots, tokens)
  // [readme:end]
}

// [readme:model_types]
using embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<ngemb::bf16>>;
using experts   = ngemb::moe<ngemb::softmax_router<>, ngemb::bf16>;          // routed + zero experts, bf16 weights
using block     = ngemb::shortcut_block<ngemb::attention<>, ngemb::swiglu<>, experts>;   // or prenorm_block<A, F>
using model     = ngemb::causal_lm<embedding, block>;
static_assert(std::is_same_v<model, ngemb::presets::longcat_shortcut<ngemb::host_policy>::model>);  // the preset
// [readme:end]
static_assert(std::is_same_v<model, ngemb_examples::demo_model<ngemb::host_policy>>,
              "the README's model type is the demo model's, so its checkpoint loads");

/// README "A whole model": load, generate, save.
ngemb::generation_result whole_model(const ngemb::host_policy& policy, const std::filesystem::path& checkpoint,
                                     const std::filesystem::path& copy) {
  // [readme:model]
  auto lm = model::load(policy, checkpoint, {.max_sequences = 16});   // strict: every tensor must fit
  ngemb::generation_options options;                                   // greedy by default
  options.max_new_tokens = 32;
  options.sampling = {.temperature = 0.7f, .top_p = 0.9f, .seed = 1};
  auto result = ngemb::generate(policy, lm, {{1, 17, 42}, {7, 8}}, options);
  lm.save(policy, copy);  // config.json + shards, written whole; a non-empty folder needs {.overwrite = true}
  // [readme:end]
  return result;
}

// [readme:resource]
/// Any type with allocate / deallocate in cuda::mr's shape is a host resource; this one counts what is live.
struct counting_resource {
  std::size_t live_bytes = 0;
  void* allocate(std::size_t bytes, std::size_t alignment) {
    live_bytes += bytes;
    return ngemb::default_host_resource{}.allocate(bytes, alignment);
  }
  void deallocate(void* pointer, std::size_t bytes, std::size_t alignment) noexcept {
    live_bytes -= bytes;
    ngemb::default_host_resource{}.deallocate(pointer, bytes, alignment);
  }
};
// [readme:end]

/// README "Contracts": a preset model whose every buffer and scratch comes from the caller's resource.
std::size_t model_on_own_memory(const std::filesystem::path& checkpoint) {
  // [readme:preset]
  counting_resource pool;                                             // must outlive the model
  const ngemb::host_policy policy = ngemb::host_policy{0}.with(pool);  // device: device_policy{}.on(stream).with(r)
  using lm = ngemb::presets::longcat_shortcut<ngemb::host_policy>::model;
  auto model = lm::load(policy, checkpoint, {.max_sequences = 2, .max_positions = 64});
  const auto greedy = ngemb::generate(policy, model, {{1, 17, 42}}, {.max_new_tokens = 4});
  // [readme:end]
  const std::size_t held = pool.live_bytes;  // weights, caches and workspace, all from the pool
  if (held == 0 || greedy.tokens[0].size() != 4) {
    throw std::runtime_error("readme_usage: the model did not allocate from the caller's resource");
  }
  return held;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: readme_usage <scratch folder>\n");
    return 2;
  }
  try {
    const std::filesystem::path scratch = argv[1];
    std::filesystem::remove_all(scratch);
    const std::filesystem::path checkpoint = scratch / "checkpoint";
    const ngemb::host_policy policy{0};
    ngemb_examples::random_model(policy, ngemb_examples::demo_config(), /*seed=*/1).save(policy, checkpoint);

    ids_and_cache(checkpoint);

    const std::vector<std::int32_t> tokens = {15, 2, 907, 31, 77};
    const std::vector<std::int64_t> offsets = {0, 3, 5};
    embed_batch(policy, checkpoint, ngemb::ragged_view<const std::int32_t>(tokens, offsets));

    const ngemb::generation_result result = whole_model(policy, checkpoint, scratch / "copy");
    const std::size_t pooled = model_on_own_memory(checkpoint);
    std::printf("readme_usage: ids, cache, embedding; generated %zu + %zu tokens; saved %s; %zu bytes from the "
                "caller's resource\n",
                result.tokens[0].size(), result.tokens[1].size(), (scratch / "copy").string().c_str(), pooled);
    return 0;
  } catch (const std::exception& failure) {
    std::fprintf(stderr, "readme_usage: %s\n", failure.what());
    return 1;
  }
}
