// Whole models (causal_lm over shortcut and pre-norm blocks) against the PyTorch float64 reference of
// tests/reference/model_reference.py: logits of a ragged batch, the same logits through the caches (prefill in
// chunks, then decode), greedy generation, save/load round trips, strict loading and bad input.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/model/causal_lm.hpp"
#include "ngemb/moe/moe_layer.hpp"
#include "ngemb/moe/swiglu.hpp"
#include "ngemb/store/mmap_store.hpp"
#include "ngemb/store/table_store.hpp"
#include "model_golden.hpp"
#include "temp_folder.hpp"

namespace {

using embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float>>;
using expert_layer = ngemb::moe<ngemb::softmax_router<>, float>;
using shortcut_lm =
    ngemb::causal_lm<embedding, ngemb::shortcut_block<ngemb::attention<>, ngemb::swiglu<>, expert_layer>>;
using prenorm_lm = ngemb::causal_lm<embedding, ngemb::prenorm_block<ngemb::attention<>, expert_layer>>;
using ngemb_test::check_against_reference;
using ngemb_test::model_golden;
using ngemb_test::model_dir;
using ngemb_test::start;
using ngemb_test::temp_folder;
const ngemb::host_policy host;

/// Every tensor of `source` (raw bytes), with `replace` applied and `extra` appended, into `folder`.
void copy_checkpoint(const std::filesystem::path& source, const std::filesystem::path& folder,
                     const std::map<std::string, ngemb::tensor_to_write>& replace,
                     const std::vector<ngemb::tensor_to_write>& extra = {}) {
  const ngemb::safetensors_checkpoint checkpoint(source);
  std::vector<ngemb::tensor_to_write> tensors;
  for (const std::string& name : checkpoint.names()) {
    if (const auto found = replace.find(name); found != replace.end()) {
      tensors.push_back(found->second);
      continue;
    }
    const ngemb::tensor_info& info = checkpoint.info(name);
    tensors.push_back({name, info.dtype, info.shape, checkpoint.file_of(name).bytes(name)});
  }
  tensors.insert(tensors.end(), extra.begin(), extra.end());
  ngemb::write_safetensors_checkpoint(folder, tensors, std::size_t{1} << 20);
  std::filesystem::copy_file(source / "config.json", folder / "config.json");
}

}  // namespace

TEST_CASE("LongCat shortcut-block model matches the PyTorch reference") { check_against_reference<shortcut_lm>(host, "shortcut"); }

TEST_CASE("pre-norm MoE model matches the PyTorch reference") { check_against_reference<prenorm_lm>(host, "prenorm"); }

TEST_CASE("an embedding read in place from the mapped checkpoint gives the same model") {
  using mapped_lm = ngemb::causal_lm<ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::mmap_store<float>>,
                                     ngemb::shortcut_block<ngemb::attention<>, ngemb::swiglu<>, expert_layer>>;
  check_against_reference<mapped_lm>(host, "shortcut");
}

TEST_CASE("last-token logits are the every-token rows at each sequence's end") {
  const model_golden expected("shortcut");
  auto model = shortcut_lm::load(ngemb::host_policy{}, model_dir / "shortcut");
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size());
  using ngemb::logits_for;
  const auto every = ngemb_test::run_batch(model, host, expected.sequences, start(model, 3), logits_for::every_token);
  const auto last = ngemb_test::run_batch(model, host, expected.sequences, start(model, 3), logits_for::last_token);
  const auto offsets = expected.offsets();
  for (std::size_t b = 0; b < 3; ++b) {
    const float* row = every.data() + static_cast<std::size_t>(offsets[b + 1] - 1) * vocab;
    // Only the lm_head GEMM differs (3 rows instead of 13: another blocking), so fp32 rounding is all that may.
    for (std::size_t id = 0; id < vocab; ++id) {
      CHECK(last[b * vocab + id] == doctest::Approx(row[id]).epsilon(1e-6));
    }
  }
}

TEST_CASE("save then load gives the same tensors and bit-identical logits") {
  const model_golden expected("shortcut");
  auto original = shortcut_lm::load(ngemb::host_policy{}, model_dir / "shortcut");
  const temp_folder folder;
  original.save(ngemb::host_policy{}, folder.path(), std::size_t{64} << 10);  // several shards
  CHECK(std::filesystem::exists(folder / "model.safetensors.index.json"));
  const ngemb::safetensors_checkpoint written(folder.path());
  const ngemb::safetensors_checkpoint source(model_dir / "shortcut");
  auto names = written.names();
  auto source_names = source.names();
  std::sort(names.begin(), names.end());
  std::sort(source_names.begin(), source_names.end());
  CHECK(names == source_names);
  for (const std::string& name : source_names) {
    const auto a = written.file_of(name).bytes(name);
    const auto b = source.file_of(name).bytes(name);
    CHECK_MESSAGE(std::equal(a.begin(), a.end(), b.begin(), b.end()), name);
  }
  CHECK(ngemb::read_model_config(folder.path()).num_layers == original.config().num_layers);
  auto reloaded = shortcut_lm::load(ngemb::host_policy{}, folder.path());
  const auto every = ngemb::logits_for::every_token;
  CHECK(ngemb_test::run_batch(original, host, expected.sequences, start(original, 3), every) ==
        ngemb_test::run_batch(reloaded, host, expected.sequences, start(reloaded, 3), every));
}

TEST_CASE("strict loading names what does not fit") {
  const auto source = model_dir / "shortcut";
  SUBCASE("a tensor the model has no parameter for") {
    const temp_folder folder;
    const std::vector<float> values{1.0f, 2.0f};
    copy_checkpoint(source, folder.path(), {},
                    {ngemb::tensor_to_write::of("model.layers.0.mlp.shared_expert.weight", {2},
                                                ngemb::view<const float>(values))});
    CHECK_THROWS_WITH_AS(shortcut_lm::load(ngemb::host_policy{}, folder.path()),
                         doctest::Contains("model.layers.0.mlp.shared_expert.weight"), ngemb::format_error);
  }
  SUBCASE("a tensor of the wrong shape") {
    const temp_folder folder;
    const std::vector<float> values(97 * 31, 0.5f);
    copy_checkpoint(source, folder.path(),
                    {{"lm_head.weight", ngemb::tensor_to_write::of("lm_head.weight", {97, 31},
                                                                   ngemb::view<const float>(values))}});
    CHECK_THROWS_WITH(shortcut_lm::load(ngemb::host_policy{}, folder.path()), doctest::Contains("lm_head.weight"));
  }
  SUBCASE("a checkpoint of the other block kind") {
    CHECK_THROWS_WITH(prenorm_lm::load(ngemb::host_policy{}, source),
                      doctest::Contains("no tensor \"model.layers.0.input_layernorm.weight\""));
    CHECK_THROWS_AS(shortcut_lm::load(ngemb::host_policy{}, model_dir / "prenorm"), ngemb::error);
  }
  SUBCASE("top_k above E+Z in the config") {
    const temp_folder folder;
    copy_checkpoint(source, folder.path(), {});
    std::ifstream in(source / "config.json");
    nlohmann::json config = nlohmann::json::parse(in);
    config["moe_topk"] = 10;  // E+Z = 9
    std::ofstream(folder / "config.json", std::ios::trunc) << config.dump();
    CHECK_THROWS_WITH_AS(shortcut_lm::load(ngemb::host_policy{}, folder.path()), doctest::Contains("top_k = 10"),
                         ngemb::invalid_argument);
  }
}

TEST_CASE("bad forward input throws before any state changes") {
  auto model = shortcut_lm::load(ngemb::host_policy{}, model_dir / "shortcut",
                                 ngemb::sequence_capacity{.max_sequences = 2, .max_positions = 8});
  const auto id = model.start_sequence();
  const auto forward = [&](std::vector<std::int32_t> tokens, std::vector<std::int32_t> ids,
                           std::vector<std::int64_t> offsets) {
    std::vector<float> logits(ids.size() * 97);
    model.forward(ngemb::host_policy{}, ngemb::view<const std::int32_t>(ids),
                  ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(tokens),
                                                         ngemb::view<const std::int64_t>(offsets)),
                  ngemb::view<float>(logits), ngemb::logits_for::last_token);
  };
  CHECK_THROWS_WITH_AS(forward({5, 97}, {id}, {0, 2}), doctest::Contains("97"), ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(forward({5}, {1}, {0, 1}), doctest::Contains("sequence 1 was not started"),
                       ngemb::invalid_argument);
  CHECK_THROWS_AS(forward({5}, {id}, {0, 2}), ngemb::shape_mismatch);
  CHECK_THROWS_WITH(forward({}, {id}, {0, 0}), doctest::Contains("at least one"));
  CHECK_THROWS_AS(forward(std::vector<std::int32_t>(9, 4), {id}, {0, 9}), ngemb::error);  // past max_positions
  CHECK(model.length(id) == 0);
  forward({5, 6, 7}, {id}, {0, 3});
  CHECK(model.length(id) == 3);
  model.start_sequence();
  CHECK_THROWS_AS(model.start_sequence(), ngemb::invalid_argument);
  model.end_sequence(id);
  CHECK_THROWS_AS(static_cast<void>(model.length(id)), ngemb::invalid_argument);
}

TEST_CASE("generation: seeded sampling is reproducible, non-finite logits are reported") {
  const model_golden expected("shortcut");
  auto model = shortcut_lm::load(ngemb::host_policy{}, model_dir / "shortcut");
  ngemb::generation_options options;
  options.max_new_tokens = 6;
  options.sampling = {.temperature = 0.8f, .top_k = 20, .top_p = 0.9f, .seed = 42};
  const auto first = model.generate(ngemb::host_policy{}, expected.sequences, options);
  const auto again = model.generate(ngemb::host_policy{}, expected.sequences, options);
  CHECK(first.tokens == again.tokens);
  options.sampling.seed = 43;
  CHECK(model.generate(ngemb::host_policy{}, expected.sequences, options).tokens != first.tokens);
  options.sampling = {.temperature = 1.0f, .top_k = 1, .top_p = 1.0f, .seed = 7};  // top-1 sampling is greedy
  options.max_new_tokens = expected.max_new_tokens;
  CHECK(model.generate(ngemb::host_policy{}, expected.sequences, options).tokens == expected.greedy);

  options.stop_token = expected.greedy[0][1];
  const auto stopped = model.generate(ngemb::host_policy{}, expected.sequences, options);
  CHECK(stopped.tokens[0] == std::vector<std::int32_t>(expected.greedy[0].begin(), expected.greedy[0].begin() + 2));

  options.max_new_tokens = 100;  // prompt + new tokens beyond max_position_embeddings = 64
  CHECK_THROWS_WITH_AS(model.generate(ngemb::host_policy{}, expected.sequences, options),
                       doctest::Contains("max_positions"), ngemb::invalid_argument);

  const temp_folder folder;
  std::vector<float> head(97 * 32, 0.01f);
  head[5 * 32 + 3] = std::nanf("");
  copy_checkpoint(model_dir / "shortcut", folder.path(),
                  {{"lm_head.weight", ngemb::tensor_to_write::of("lm_head.weight", {97, 32},
                                                                 ngemb::view<const float>(head))}});
  auto broken = shortcut_lm::load(ngemb::host_policy{}, folder.path());
  options.max_new_tokens = 2;
  CHECK_THROWS_WITH_AS(broken.generate(ngemb::host_policy{}, expected.sequences, options),
                       doctest::Contains("token 5"), ngemb::invalid_argument);
}

TEST_CASE("sample_token: greedy ties, top-k, top-p and the sampled distribution") {
  const std::vector<float> logits{1.0f, 3.0f, 3.0f, 0.0f, 2.0f};
  ngemb::token_rng rng(1);
  CHECK(ngemb::sample_token(ngemb::view<const float>(logits), {}, rng) == 1);  // ties go to the lowest id

  const auto frequencies = [&](const ngemb::sampling_options& options) {
    std::vector<double> counts(logits.size());
    constexpr int draws = 20000;
    for (int i = 0; i < draws; ++i) {
      counts[static_cast<std::size_t>(ngemb::sample_token(ngemb::view<const float>(logits), options, rng))] += 1.0 / draws;
    }
    return counts;
  };
  // softmax(logits / 0.5) in float64; 20000 draws put 4 standard deviations under 0.015.
  const auto full = frequencies({.temperature = 0.5f});
  double total = 0.0;
  std::vector<double> softmax;
  for (const float logit : logits) {
    softmax.push_back(std::exp((logit - 3.0) / 0.5));
    total += softmax.back();
  }
  for (std::size_t id = 0; id < logits.size(); ++id) {
    CHECK(std::abs(full[id] - softmax[id] / total) < 0.015);
  }
  const auto top2 = frequencies({.temperature = 1.0f, .top_k = 2});
  CHECK(top2[0] == 0.0);
  CHECK(top2[3] == 0.0);
  CHECK(top2[4] == 0.0);
  CHECK(top2[1] == doctest::Approx(0.5).epsilon(0.05));
  // p(1) = p(2) = 0.4223 at temperature 1: a nucleus of 0.5 needs both, and never reaches id 4 (0.155).
  const auto nucleus = frequencies({.temperature = 1.0f, .top_p = 0.5f});
  CHECK(nucleus[4] == 0.0);
  CHECK(nucleus[1] + nucleus[2] == doctest::Approx(1.0));
  CHECK_THROWS_AS(ngemb::sample_token(ngemb::view<const float>(logits), {.temperature = -1.0f}, rng),
                  ngemb::invalid_argument);
}

TEST_CASE("model_config: config.json round trip and field errors") {
  const auto config = ngemb::read_model_config(model_dir / "shortcut");
  CHECK(config.num_layers == 2);
  CHECK(config.router().top_k == 3);
  const auto again = ngemb::parse_model_config(ngemb::to_json(config));
  CHECK(ngemb::to_json(again) == ngemb::to_json(config));
  nlohmann::json broken = nlohmann::json::parse(ngemb::to_json(config));
  broken.erase("num_layers");
  CHECK_THROWS_WITH_AS(ngemb::parse_model_config(broken.dump()), doctest::Contains("num_layers"), ngemb::format_error);
  broken = nlohmann::json::parse(ngemb::to_json(config));
  broken["num_key_value_heads"] = 3;
  CHECK_THROWS_WITH_AS(ngemb::parse_model_config(broken.dump()), doctest::Contains("num_key_value_heads"),
                       ngemb::invalid_argument);
}
