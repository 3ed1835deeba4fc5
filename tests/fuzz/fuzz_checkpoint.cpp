// libFuzzer harness: loading a checkpoint folder as ngram_embed and generate do. The input is config.json's text,
// a NUL byte, then the bytes of model.safetensors (no NUL: config.json alone). The folder is loaded as
//   * the n-gram embedding with its tables copied (table_store<bf16>) and read in place (mmap_store<T> for F32,
//     BF16 and F16, as examples/ngram_embed.cpp chooses by dtype);
//   * the demo model of examples/demo_model.hpp (shortcut blocks, bf16 experts; examples/generate.cpp), and a
//     pre-norm model with the same parts, each through causal_lm::load with a small sequence_capacity;
// and whatever loads runs one forward of a few tokens (the models: a prefill, a decode step and a short greedy
// generate). Only ngemb::error may come out; sizes the file does not back must be refused before they are
// allocated (the run's -malloc_limit_mb catches a loader that trusts config.json).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

#include "demo_model.hpp"
#include "fuzz_common.hpp"
#include "ngemb/ngemb.hpp"

namespace {

using ngemb_fuzz::expect;
using policy_type = ngemb::host_policy;

using shortcut_model = ngemb_examples::demo_model<policy_type>;
using prenorm_model = ngemb::causal_lm<ngemb::presets::longcat_shortcut<policy_type, float>::embedding,
                                       ngemb::presets::longcat_prenorm<policy_type>::block>;

/// Three tokens inside [0, V): the first, the second and the last id.
std::vector<std::int32_t> a_few_tokens(std::int64_t vocab) {
  expect(vocab >= 1 && vocab <= (std::int64_t{1} << 31), "a loaded config has vocab_size " + std::to_string(vocab));
  return {0, static_cast<std::int32_t>(1 % vocab), static_cast<std::int32_t>(vocab - 1)};
}

template <class Embedding>
void embed_a_few(const policy_type& policy, Embedding& embedding) {
  const std::vector<std::int32_t> tokens = a_few_tokens(embedding.config().vocab_size);
  const std::vector<std::int64_t> offsets = {0, 2, 3};
  const std::vector<std::int32_t> context = {tokens[2]};
  const std::vector<std::int64_t> context_offsets = {0, 1, 1};
  std::vector<float> out(tokens.size() * static_cast<std::size_t>(embedding.output_width()));
  const ngemb::ragged_view<const std::int32_t> batch{ngemb::view<const std::int32_t>(tokens),
                                                     ngemb::view<const std::int64_t>(offsets)};
  embedding.forward(policy, batch, ngemb::view<float>(out));
  embedding.forward(policy, batch,
                    ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(context),
                                                           ngemb::view<const std::int64_t>(context_offsets)),
                    ngemb::view<float>(out));
}

template <class Model>
void run_a_few(const policy_type& policy, Model& model) {
  const std::vector<std::int32_t> tokens = a_few_tokens(model.config().vocab_size());
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size());
  const std::int32_t sequence = model.start_sequence();
  std::vector<float> logits(tokens.size() * vocab);
  const std::vector<std::int64_t> offsets = {0, static_cast<std::int64_t>(tokens.size())};
  model.forward(policy, ngemb::view<const std::int32_t>(&sequence, 1),
                ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(tokens),
                                                       ngemb::view<const std::int64_t>(offsets)),
                ngemb::view<float>(logits));
  const std::vector<std::int64_t> one = {0, 1};
  logits.resize(vocab);
  model.forward(policy, ngemb::view<const std::int32_t>(&sequence, 1),
                ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(tokens.data(), 1),
                                                       ngemb::view<const std::int64_t>(one)),
                ngemb::view<float>(logits), {.logits = ngemb::logits_for::last_token});
  expect(model.length(sequence) == static_cast<std::int64_t>(tokens.size()) + 1, "the sequence has the wrong length");
  model.end_sequence(sequence);
  ngemb::generation_options options;
  options.max_new_tokens = 2;
  const auto result = ngemb::generate(policy, model, {{tokens[1], tokens[2]}}, options);
  expect(result.tokens.size() == 1 && result.tokens[0].size() <= 2, "generate returned the wrong number of tokens");
  for (const std::int32_t generated : result.tokens[0]) {
    expect(generated >= 0 && generated < model.config().vocab_size(), "generate returned a token outside [0, V)");
  }
}

template <ngemb::storage_type T>
void load_mapped(const policy_type& policy, const std::filesystem::path& folder) {
  const ngemb::ngram_config config = ngemb::read_ngram_config(folder);
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(folder);
  using embedding_type = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::mmap_store<T>>;
  auto embedding = embedding_type::load(policy, checkpoint, ngemb::ngram_names::released_owner, config);
  embed_a_few(policy, embedding);
}

/// library_accepts, and with NGEMB_FUZZ_TRACE set a line saying what loaded (or the library's reason).
template <class Body>
void attempt(const char* what, Body&& body) {
  static const bool trace = std::getenv("NGEMB_FUZZ_TRACE") != nullptr;
  try {
    body();
    if (trace) {
      std::fprintf(stderr, "%s: loaded and ran\n", what);
    }
  } catch (const ngemb::error& refusal) {
    if (trace) {
      std::fprintf(stderr, "%s: %s\n", what, refusal.what());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const ngemb_fuzz::scratch_folder scratch("checkpoint");
  const std::filesystem::path& folder = scratch.path();
  const auto* separator = static_cast<const std::uint8_t*>(std::memchr(data, 0, size));
  const std::size_t config_size = separator == nullptr ? size : static_cast<std::size_t>(separator - data);
  ngemb_fuzz::write_file(folder / "config.json", data, config_size);
  const std::filesystem::path tensors = folder / "model.safetensors";
  if (separator != nullptr) {
    ngemb_fuzz::write_file(tensors, separator + 1, size - config_size - 1);
  } else {
    std::filesystem::remove(tensors);
  }

  const policy_type policy{1};
  attempt("table_store<bf16> embedding", [&] {
    auto embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<ngemb::bf16>>::load(policy, folder);
    embed_a_few(policy, embedding);
  });
  attempt("mmap_store<float> embedding", [&] { load_mapped<float>(policy, folder); });
  attempt("mmap_store<bf16> embedding", [&] { load_mapped<ngemb::bf16>(policy, folder); });
  attempt("mmap_store<fp16> embedding", [&] { load_mapped<ngemb::fp16>(policy, folder); });

  const ngemb::sequence_capacity capacity{.max_sequences = 2, .max_positions = 8};
  attempt("shortcut model", [&] {
    auto model = shortcut_model::load(policy, folder, capacity);
    run_a_few(policy, model);
  });
  attempt("pre-norm model", [&] {
    auto model = prenorm_model::load(policy, folder, capacity);
    run_a_few(policy, model);
  });
  return 0;
}
