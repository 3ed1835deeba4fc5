// embed/: the n-gram embedding forward against the independent fp64 reference (tests/reference/
// ngram_embedding_reference.py), for every store, amplification, accumulator and output type, one-shot and through
// the n-gram cache; PLNE and its gated FFN; and the errors of mismatched parts.
//
// Tolerances (error = largest |got - want| of a token row over that row's largest |want|, see embedding_golden.hpp):
// fp32 accumulation 1e-5 (the sums have at most T*d + 1 = 49 terms: a few fp32 roundings, ~1e-7 in practice);
// fp64 accumulation 1e-12 (2^-23 once rounded to an fp32 output); bf16 output 2^-8 (one rounding to 8 significant bits: <= 2^-9 of the value, plus the fp32
// error). bf16/fp16 tables need no extra allowance: the reference computes from the stored (rounded) values.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "embedding_golden.hpp"
#include "temp_folder.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/embed/per_layer_ngram_embedding.hpp"
#include "ngemb/embed/plain_embedding.hpp"
#include "ngemb/ffn/ngram_gated_ffn.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/store/mmap_store.hpp"
#include "ngemb/store/table_store.hpp"

namespace {

using ngemb_test::embedding_golden;
using ngemb_test::worst_row_error;

const ngemb::host_policy policy{2, 64};  // two threads and small chunks, so the threaded paths run too

static_assert(ngemb::cached_embedding<ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float>>>);
static_assert(ngemb::cached_embedding<ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::mmap_store<ngemb::bf16>>>);

template <class Embedding>
Embedding load_with(const embedding_golden& golden) {
  return Embedding::load(policy, golden.folder);
}

template <class Out, class Embedding>
void check_prefill(Embedding& embedding, const embedding_golden& golden, const std::string& amplification,
                   double tolerance) {
  ngemb_test::check_prefill<Out>(policy, embedding, golden, amplification, tolerance);
}

template <class Embedding>
void check_through_cache(Embedding& embedding, const embedding_golden& golden, const std::string& amplification,
                         std::uint32_t seed) {
  ngemb_test::check_through_cache(policy, embedding, golden, amplification, seed);
}

template <class Store, class Acc = float>
void check_all_amplifications(const std::string& name, double tolerance) {
  const embedding_golden golden = ngemb_test::load_embedding_golden(name);
  using projection = ngemb::fused_projection<Acc>;
  const double float_output = std::max(tolerance, 0x1p-23);  // fp64 results still round once to fp32
  {
    auto embedding = load_with<ngemb::ngram_embedding<ngemb::longcat_hash, Store, projection>>(golden);
    check_prefill<float>(embedding, golden, "none", float_output);
    check_prefill<double>(embedding, golden, "none", tolerance);
    check_prefill<ngemb::bf16>(embedding, golden, "none", 0x1p-8);
    check_through_cache(embedding, golden, "none", 11);
  }
  {
    auto embedding = load_with<ngemb::ngram_embedding<ngemb::longcat_hash, Store, projection,
                                                      ngemb::sqrt_hidden_amplification>>(golden);
    check_prefill<float>(embedding, golden, "sqrt_hidden", float_output);
    check_through_cache(embedding, golden, "sqrt_hidden", 12);
  }
  {
    auto embedding = load_with<ngemb::ngram_embedding<ngemb::longcat_hash, Store, projection,
                                                      ngemb::layer_norm_amplification<>>>(golden);
    check_prefill<float>(embedding, golden, "layer_norm", float_output);
    check_prefill<ngemb::fp16>(embedding, golden, "layer_norm", 0x1p-10);
    check_through_cache(embedding, golden, "layer_norm", 13);
  }
}

}  // namespace



TEST_CASE("fp32 tables in one file: every store, amplification and output type") {
  check_all_amplifications<ngemb::table_store<float>>("f32_single", 1e-5);
  check_all_amplifications<ngemb::mmap_store<float>>("f32_single", 1e-5);
  check_all_amplifications<ngemb::table_store<float>, double>("f32_single", 1e-12);
}

TEST_CASE("bf16 tables in three shards") {
  check_all_amplifications<ngemb::mmap_store<ngemb::bf16>>("bf16_sharded", 1e-5);
  check_all_amplifications<ngemb::table_store<ngemb::bf16>>("bf16_sharded", 1e-5);
  check_all_amplifications<ngemb::table_store<float>>("bf16_sharded", 1e-5);  // widened on load: exact
  check_all_amplifications<ngemb::mmap_store<ngemb::bf16>, double>("bf16_sharded", 1e-12);
}

TEST_CASE("fp16 tables, bigrams only, no EOS") {
  check_all_amplifications<ngemb::mmap_store<ngemb::fp16>>("f16_bigram", 1e-5);
  check_all_amplifications<ngemb::table_store<ngemb::fp16>>("f16_bigram", 1e-5);
}

TEST_CASE("table_store narrowing fp32 checkpoint tables to bf16 stays within bf16 rounding") {
  const auto golden = ngemb_test::load_embedding_golden("f32_single");
  auto embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<ngemb::bf16>>::load(policy, golden.folder);
  // Each gathered value moves by <= 2^-9 of itself, so the row error stays below 2^-9 times sum |w e| / max |out|,
  // which for these random tables is a few times 2^-9.
  check_prefill<float>(embedding, golden, "none", 0x1p-5);
}

TEST_CASE("per-layer n-gram embedding and its gated FFN") {
  const auto golden = ngemb_test::load_embedding_golden("plne");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(golden.folder);
  const auto inputs = embedding_golden::flatten(golden.expected.at("inputs"));
  const std::vector<float> x(inputs.begin(), inputs.end());  // the reference draws fp32-representable inputs
  const std::size_t count = golden.batch.tokens.size();
  const std::int64_t hidden = golden.config.hidden_size;

  auto run = [&](auto plne) {
    CHECK(plne.num_layers() == 2);
    CHECK(plne.width() == 16);
    plne.hash(policy, golden.batch.token_view());
    for (int layer = 0; layer < plne.num_layers(); ++layer) {
      const auto& expected = golden.expected.at("plne").at(static_cast<std::size_t>(layer));
      std::vector<float> e(count * 16);
      plne.embed(policy, layer, ngemb::view<float>(e));
      CHECK(worst_row_error(e, embedding_golden::flatten(expected.at("embedding")), 16) <= 1e-5);

      const std::string prefix = ngemb::ngram_names::layer(layer) + ".ngram_ffn";
      auto ffn = ngemb::ngram_gated_ffn<>::load(policy, *checkpoint, prefix, {.hidden = hidden, .width = 16});
      ngemb::tensor_collection saved;  // save writes what load read (fp32 weights: exactly)
      ffn.save(policy, prefix, saved);
      REQUIRE(saved.size() == 2);
      for (const auto& tensor : saved.tensors()) {
        const auto bytes = checkpoint->bytes(tensor.name);
        CHECK(tensor.shape == checkpoint->info(tensor.name).shape);
        CHECK(std::equal(tensor.data.begin(), tensor.data.end(), bytes.begin(), bytes.end()));
      }
      std::vector<float> y(count * static_cast<std::size_t>(hidden));
      ffn.forward(policy, count, ngemb::view<const float>(x), ngemb::view<const float>(e), ngemb::view<float>(y));
      const double error = worst_row_error(y, embedding_golden::flatten(expected.at("ffn")), static_cast<std::size_t>(hidden));
      INFO("layer " << layer << " ffn error " << error);
      CHECK(error <= 1e-5);
    }
  };
  run(ngemb::per_layer_ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float>>::load(policy, checkpoint,
                                                                                             golden.config, 2));
  run(ngemb::per_layer_ngram_embedding<ngemb::longcat_hash, ngemb::mmap_store<float>>::load(policy, checkpoint,
                                                                                            golden.config, 2));
}

TEST_CASE("deferred checks: bad tokens and offsets are reported later, and the forward stays memory-safe") {
  const auto golden = ngemb_test::load_embedding_golden("f32_single");
  auto embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float>>::load(policy, golden.folder);
  const auto width = static_cast<std::size_t>(golden.config.hidden_size);
  std::mt19937 random(5);
  for (int trial = 0; trial < 20; ++trial) {
    // Tokens far outside [0, V) and, every other trial, offsets that point anywhere.
    std::vector<std::int32_t> tokens(1 + random() % 40);
    for (auto& token : tokens) {
      token = static_cast<std::int32_t>(random());
    }
    std::vector<std::int64_t> offsets = {0, static_cast<std::int64_t>(tokens.size())};
    if (trial % 2 == 1) {
      offsets = {static_cast<std::int64_t>(random() % 1000) - 500, static_cast<std::int64_t>(random()),
                 static_cast<std::int64_t>(tokens.size())};
    }
    std::vector<float> out(tokens.size() * width);
    ngemb::input_checks<ngemb::host_policy> checks(policy);
    embedding.forward_async(policy, ngemb::ragged_view<const std::int32_t>(tokens, offsets), ngemb::view<float>(out),
                            checks);
    CHECK_THROWS_AS(checks.raise_if_failed(), ngemb::error);
  }
  // Valid input through the deferred path gives the checked path's result.
  std::vector<float> checked(golden.batch.tokens.size() * width);
  std::vector<float> deferred(checked.size());
  embedding.forward(policy, golden.batch.token_view(), ngemb::view<float>(checked));
  ngemb::input_checks<ngemb::host_policy> checks(policy);
  embedding.forward_async(policy, golden.batch.token_view(), ngemb::view<float>(deferred), checks);
  checks.raise_if_failed();
  CHECK(deferred == checked);

  // The same with a context and through the cache: results equal the checked calls', bad tokens raise later.
  embedding.forward(policy, golden.batch.token_view(), golden.batch.context_view(), ngemb::view<float>(checked));
  ngemb::input_checks<ngemb::host_policy> context_checks(policy);
  embedding.forward_async(policy, golden.batch.token_view(), golden.batch.context_view(), ngemb::view<float>(deferred),
                          context_checks);
  context_checks.raise_if_failed();
  CHECK(deferred == checked);
  ngemb::ngram_cache<> cache(policy, golden.config, golden.batch.offsets.size() - 1, 0);
  std::vector<std::int32_t> slots;
  for (std::size_t sequence = 0; sequence + 1 < golden.batch.offsets.size(); ++sequence) {
    slots.push_back(cache.allocate());
  }
  embedding.forward(policy, cache, slots, golden.batch.token_view(), ngemb::view<float>(checked));
  ngemb::input_checks<ngemb::host_policy> cache_checks(policy);
  embedding.forward_async(policy, cache, slots, golden.batch.token_view(), ngemb::view<float>(deferred), cache_checks);
  cache_checks.raise_if_failed();
  CHECK(deferred == checked);
  std::vector<std::int32_t> bad_tokens = golden.batch.tokens;
  bad_tokens.back() = static_cast<std::int32_t>(golden.config.vocab_size);
  ngemb::input_checks<ngemb::host_policy> bad_checks(policy);
  embedding.forward_async(policy, cache, slots, ngemb::ragged_view<const std::int32_t>(bad_tokens, golden.batch.offsets),
                          ngemb::view<float>(deferred), bad_checks);
  CHECK_THROWS_AS(bad_checks.raise_if_failed(), ngemb::token_out_of_range);
}

TEST_CASE("embedding errors name what is wrong") {
  const auto golden = ngemb_test::load_embedding_golden("f32_single");
  using embedding_type = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float>>;
  auto embedding = embedding_type::load(policy, golden.folder);
  const auto width = static_cast<std::size_t>(golden.config.hidden_size);

  SUBCASE("output of the wrong size") {
    std::vector<float> out(golden.batch.tokens.size() * width - 1);
    CHECK_THROWS_WITH_AS(embedding.forward(policy, golden.batch.token_view(), ngemb::view<float>(out)),
                         doctest::Contains("out must hold tokens x width"), ngemb::shape_mismatch);
  }
  SUBCASE("token outside the vocabulary") {
    ngemb_test::token_batch batch;
    batch.add({1, 2, 64});
    std::vector<float> out(3 * width);
    try {
      embedding.forward(policy, batch.token_view(), ngemb::view<float>(out));
      FAIL("no exception");
    } catch (const ngemb::token_out_of_range& failure) {
      CHECK(failure.position() == 2);
      CHECK(failure.value() == 64);
    }
  }
  SUBCASE("a config whose moduli disagree with the checkpoint") {
    auto config = golden.config;
    config.ratio = 2.0;
    const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(golden.folder);
    CHECK_THROWS_WITH_AS(embedding_type::load(policy, checkpoint, "model", config),
                         doctest::Contains("embedders.0.weight"), ngemb::format_error);
  }
  SUBCASE("parts built for different configs") {
    auto other = golden.config;
    other.ratio = 2.0;
    const ngemb::safetensors_checkpoint checkpoint(golden.folder);
    auto projection = ngemb::fused_projection<>::load(policy, checkpoint, "model.ngram_embeddings",
                                                      {.num_tables = golden.config.num_tables(),
                                                       .row_width = golden.config.row_width(),
                                                       .output_width = golden.config.hidden_size});
    std::vector<float> base(static_cast<std::size_t>(other.vocab_size * other.hidden_size), 0.5f);
    std::vector<std::vector<float>> tables;
    std::vector<ngemb::view<const float>> views;
    for (int table = 0; table < other.num_tables(); ++table) {
      tables.emplace_back(static_cast<std::size_t>(other.modulus(table) * other.row_width()), 0.25f);
    }
    for (const auto& table : tables) {
      views.emplace_back(table);
    }
    ngemb::table_store<float> store(policy, other, ngemb::view<const float>(base), views);
    CHECK_THROWS_WITH_AS(embedding_type(golden.config, std::move(store), std::move(projection)),
                         doctest::Contains("sub-table 0 has 129 rows but the hash needs m_0 = 97"),
                         ngemb::shape_mismatch);
  }
  SUBCASE("a projection given another number of weights than its shape") {
    const std::vector<float> weight(static_cast<std::size_t>(golden.config.hidden_size * golden.config.row_width()));
    const std::vector<ngemb::view<const float>> views{ngemb::view<const float>(weight)};
    CHECK_THROWS_WITH_AS(ngemb::fused_projection<>(policy,
                                                   {.num_tables = 2,
                                                    .row_width = golden.config.row_width(),
                                                    .output_width = golden.config.hidden_size},
                                                   std::span<const ngemb::view<const float>>(views)),
                         "fused_projection: 1 projections given, the shape has 2 sub-tables", ngemb::shape_mismatch);
  }
  SUBCASE("mmap_store of another dtype than the file") {
    CHECK_THROWS_WITH_AS((ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::mmap_store<ngemb::bf16>>::load(
                             policy, golden.folder)),
                         doctest::Contains("expected BF16"), ngemb::format_error);
  }
  SUBCASE("a missing tensor") {
    const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(golden.folder);
    CHECK_THROWS_WITH_AS(embedding_type::load(policy, checkpoint, "model.layers.0", golden.config),
                         doctest::Contains("model.layers.0.embed_tokens.weight"), ngemb::format_error);
  }
}

TEST_CASE("a crafted config.json beside real tables is refused before anything is allocated (issue 9)") {
  const auto golden = ngemb_test::load_embedding_golden("f32_single");
  using embedding_type = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float>>;
  const ngemb_test::temp_folder folder;
  for (const auto& entry : std::filesystem::directory_iterator(golden.folder)) {
    std::filesystem::copy(entry.path(), folder / entry.path().filename().string());
  }
  const auto load_with = [&](const std::string& config_json) {
    std::ofstream(folder / "config.json", std::ios::trunc) << config_json;
    (void)embedding_type::load(policy, folder.path());
  };
  // hidden_size * sizeof(float) wrapped, the buffer was tiny and the table load wrote past it.
  CHECK_THROWS_WITH_AS(load_with(R"({"vocab_size": 1, "hidden_size": 1317624576693539401, "m_base": 6,
                                     "emb_neighbor_num": 2, "emb_split_num": 1})"),
                       doctest::Contains("hidden_size (H) 1317624576693539401 is larger than 2^20"),
                       ngemb::invalid_argument);
  // Valid but far larger than the checkpoint: the tensors' shapes are checked before tables of that size are made.
  CHECK_THROWS_AS(load_with(R"({"vocab_size": 2147483647, "hidden_size": 1048576, "ngram_vocab_size_ratio": 1.5,
                                "emb_neighbor_num": 2, "emb_split_num": 1})"),
                  ngemb::format_error);
}

static_assert(ngemb::cached_embedding<ngemb::plain_embedding<>>);
static_assert(ngemb::cached_embedding<ngemb::plain_embedding<ngemb::bf16>>);

TEST_CASE("plain embedding: the table's rows through the cached_embedding interface, saved and loaded by HF name") {
  const std::int64_t vocab = 11;
  const std::int64_t hidden = 6;
  std::vector<ngemb::bf16> table(static_cast<std::size_t>(vocab * hidden));
  std::mt19937 random(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (auto& value : table) {
    value = ngemb::bf16(uniform(random));
  }
  const ngemb::plain_embedding<ngemb::bf16> original(policy, vocab, hidden, ngemb::view<const ngemb::bf16>(table));
  ngemb::tensor_collection tensors;
  original.save(policy, "model", tensors);
  REQUIRE(tensors.size() == 1);
  CHECK(tensors.tensors()[0].name == "model.embed_tokens.weight");
  const ngemb_test::temp_folder folder;
  ngemb::write_safetensors_checkpoint(folder.path(), tensors.tensors(), std::size_t{1} << 30);
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(folder.path());

  // The cache needs an n-gram config; the plain embedding reads only V and H of it.
  ngemb::ngram_config config;
  config.vocab_size = vocab;
  config.hidden_size = hidden;
  config.max_order = 2;
  config.splits = 1;
  config.ratio = 1.0;
  auto loaded = ngemb::plain_embedding<float>::load(policy, checkpoint, "model", config);  // bf16 -> float
  CHECK(loaded.output_width() == hidden);
  ngemb::ngram_cache<> cache(policy, config, 2, 0);
  const std::vector<std::int32_t> slots = {cache.allocate(), cache.allocate()};
  const std::vector<std::int32_t> tokens = {3, 0, 10, 3, 7};
  const std::vector<std::int64_t> offsets = {0, 3, 5};
  std::vector<float> out(tokens.size() * static_cast<std::size_t>(hidden), -1.0f);
  loaded.forward(policy, cache, slots, ngemb::ragged_view<const std::int32_t>(tokens, offsets), ngemb::view<float>(out));
  std::vector<float> expected;
  for (const std::int32_t token : tokens) {  // a direct row copy
    for (std::int64_t column = 0; column < hidden; ++column) {
      expected.push_back(static_cast<float>(table[static_cast<std::size_t>(token * hidden + column)]));
    }
  }
  CHECK(out == expected);

  SUBCASE("errors") {
    std::vector<std::int32_t> bad = tokens;
    bad[3] = static_cast<std::int32_t>(vocab);
    CHECK_THROWS_WITH_AS(loaded.forward(policy, cache, slots, ngemb::ragged_view<const std::int32_t>(bad, offsets),
                                        ngemb::view<float>(out)),
                         doctest::Contains("token id 11 at sequence 1, position 0 (flat index 3) is outside [0, 11)"),
                         ngemb::token_out_of_range);
    bad[3] = -1;
    CHECK_THROWS_AS(loaded.forward(policy, cache, slots, ngemb::ragged_view<const std::int32_t>(bad, offsets),
                                   ngemb::view<float>(out)),
                    ngemb::token_out_of_range);
    std::vector<float> short_out(out.size() - 1);
    CHECK_THROWS_WITH_AS(loaded.forward(policy, cache, slots, ngemb::ragged_view<const std::int32_t>(tokens, offsets),
                                        ngemb::view<float>(short_out)),
                         doctest::Contains("out must hold tokens x H = 5 x 6 values, got 29"), ngemb::shape_mismatch);
    const std::vector<std::int32_t> one_slot = {slots[0]};
    CHECK_THROWS_WITH_AS(loaded.forward(policy, cache, one_slot, ngemb::ragged_view<const std::int32_t>(tokens, offsets),
                                        ngemb::view<float>(out)),
                         doctest::Contains("1 slots for 2 sequences"), ngemb::shape_mismatch);
    ngemb::ngram_config wider = config;
    wider.hidden_size = hidden + 2;
    CHECK_THROWS_WITH_AS((void)ngemb::plain_embedding<float>::load(policy, checkpoint, "model", wider),
                         doctest::Contains("model.embed_tokens.weight"), ngemb::format_error);
    CHECK_THROWS_WITH_AS((void)ngemb::plain_embedding<float>::load(policy, checkpoint, "model.mtp", config),
                         doctest::Contains("model.mtp.embed_tokens.weight"), ngemb::format_error);
    CHECK_THROWS_AS((ngemb::plain_embedding<float>(policy, vocab, hidden, ngemb::view<const float>(expected))),
                    ngemb::shape_mismatch);
  }
}

TEST_CASE("fused_projection with bf16 and fp16 W_cat: an fp64 projection of the rounded weights, saved in its dtype") {
  const ngemb::projection_shape shape{.num_tables = 3, .row_width = 40, .output_width = 70};
  std::mt19937 random(22);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> weights(3);
  std::vector<ngemb::view<const float>> views;
  for (auto& weight : weights) {
    weight.resize(70 * 40);
    std::generate(weight.begin(), weight.end(), [&] { return normal(random); });
    views.emplace_back(weight);
  }
  const auto check = [&]<class W>(W /*tag*/, const ngemb::host_policy& policy) {
    const ngemb::fused_projection<float, ngemb::host_policy, W> projection(
        policy, shape, std::span<const ngemb::view<const float>>(views));
    // The reference: the same sub-tables rounded to W, projected in fp64.
    std::vector<std::vector<double>> rounded(3);
    std::vector<ngemb::view<const double>> rounded_views;
    for (std::size_t table = 0; table < 3; ++table) {
      for (const float value : weights[table]) {
        rounded[table].push_back(static_cast<double>(static_cast<float>(W(value))));
      }
      rounded_views.emplace_back(rounded[table]);
    }
    const ngemb::fused_projection<double> reference(policy, shape,
                                                    std::span<const ngemb::view<const double>>(rounded_views));
    for (const std::size_t tokens : {std::size_t{1}, std::size_t{7}, std::size_t{40}}) {
      std::vector<float> gathered(tokens * 120);
      std::generate(gathered.begin(), gathered.end(), [&] { return normal(random); });
      std::vector<double> gathered_fp64(gathered.begin(), gathered.end());
      std::vector<float> out(tokens * 70, -1.0f);
      std::vector<double> want(tokens * 70);
      projection.project(policy, tokens, ngemb::view<const float>(gathered), ngemb::view<float>(out));
      reference.project(policy, tokens, ngemb::view<const double>(gathered_fp64), ngemb::view<double>(want));
      double worst = 0.0;
      for (std::size_t i = 0; i < out.size(); ++i) {
        worst = std::max(worst, std::abs(out[i] - want[i]));
      }
      INFO("tokens = " << tokens << ", threads = " << policy.threads);
      CHECK(worst <= 1e-5 * std::sqrt(120.0));  // exact products, fp32 sums of 120 of them
    }
    ngemb::tensor_collection tensors;
    projection.save(policy, "model.ngram_embeddings", tensors);
    REQUIRE(tensors.tensors().size() == 3);
    CHECK(tensors.tensors()[0].dtype == std::string(ngemb::name_of(ngemb::dtype_of<W>)));
  };
  for (const unsigned threads : {1u, 2u}) {
    check(ngemb::bf16{}, ngemb::host_policy{threads});
    check(ngemb::fp16{}, ngemb::host_policy{threads});
  }
}

TEST_CASE("fused_projection with fp8 W_cat: fp64 over the dequantised weights; post_projs load and save as F8 + scale") {
  // row_width 256 (LongCat's): W_cat's 128 x 128 blocks are the sub-tables' own, so quantising the whole W_cat,
  // loading each bf16 post_proj quantised, and reloading the saved F8 tensors give the same codes and scales.
  const ngemb::projection_shape shape{.num_tables = 3, .row_width = 256, .output_width = 200};
  const ngemb::host_policy policy{2};
  std::mt19937 random(23);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> weights(3);
  std::vector<ngemb::view<const float>> views;
  ngemb::tensor_collection bf16_tensors;
  for (std::size_t table = 0; table < 3; ++table) {
    weights[table].resize(200 * 256);
    // Blocks of different magnitudes, so their scales differ.
    for (std::size_t i = 0; i < weights[table].size(); ++i) {
      weights[table][i] = float(ngemb::bf16(normal(random) * (1.0f + static_cast<float>((i / 256) / 128 + table))));
    }
    views.emplace_back(weights[table]);
    std::vector<ngemb::bf16> rounded(weights[table].begin(), weights[table].end());
    bf16_tensors.add<ngemb::bf16>(ngemb::host_policy{}, "ngram.post_projs." + std::to_string(table) + ".weight",
                                  {200, 256}, ngemb::view<const ngemb::bf16>(rounded));
  }
  using fp8_projection = ngemb::fused_projection<float, ngemb::host_policy, ngemb::fp8_e4m3>;
  const fp8_projection projection(policy, shape, std::span<const ngemb::view<const float>>(views));
  const auto& matrix = projection.weights();
  CHECK(matrix.bytes() == 200 * 768 + 2 * 6 * sizeof(float));
  // The reference: W_cat dequantised, projected in fp64.
  std::vector<double> dequantised(200 * 768);
  for (std::size_t row = 0; row < 200; ++row) {
    for (std::size_t column = 0; column < 768; ++column) {
      dequantised[row * 768 + column] = static_cast<double>(static_cast<float>(matrix.values()[row * 768 + column])) *
                                        matrix.scale_inv()[(row / 128) * 6 + column / 128];
    }
  }
  for (const std::size_t tokens : {std::size_t{1}, std::size_t{6}, std::size_t{30}}) {
    std::vector<float> gathered(tokens * 768);
    std::generate(gathered.begin(), gathered.end(), [&] { return normal(random); });
    std::vector<float> out(tokens * 200);
    projection.project(policy, tokens, ngemb::view<const float>(gathered), ngemb::view<float>(out));
    double worst = 0.0;
    double scale = 0.0;
    for (std::size_t t = 0; t < tokens; ++t) {
      for (std::size_t row = 0; row < 200; ++row) {
        double want = 0.0;
        double magnitude = 0.0;
        for (std::size_t column = 0; column < 768; ++column) {
          want += gathered[t * 768 + column] * dequantised[row * 768 + column];
          magnitude += std::abs(gathered[t * 768 + column] * dequantised[row * 768 + column]);
        }
        worst = std::max(worst, std::abs(out[t * 200 + row] - want));
        scale = std::max(scale, magnitude);
      }
    }
    INFO("tokens = " << tokens << ": worst error " << worst);
    CHECK(worst <= 770 * 0x1p-23 * scale);  // fp32 sums of 768 products (fp8_check.hpp's bound)
  }
  const auto same_codes = [&](const fp8_projection& other) {
    const auto& w = other.weights();
    CHECK(std::equal(w.values().begin(), w.values().end(), matrix.values().begin(),
                     [](ngemb::fp8_e4m3 x, ngemb::fp8_e4m3 y) { return x.bits == y.bits; }));
    CHECK(std::equal(w.scale_inv().begin(), w.scale_inv().end(), matrix.scale_inv().begin()));
  };
  const ngemb_test::temp_folder folder;
  ngemb::write_safetensors(folder / "bf16.safetensors", bf16_tensors.tensors());
  same_codes(fp8_projection::load(policy, ngemb::safetensors_checkpoint(folder / "bf16.safetensors"), "ngram", shape));
  ngemb::tensor_collection saved;
  projection.save(policy, "ngram", saved);
  REQUIRE(saved.tensors().size() == 6);
  CHECK(saved.tensors()[0].dtype == "F8_E4M3");
  CHECK(saved.tensors()[1].name == "ngram.post_projs.0.weight_scale_inv");
  ngemb::write_safetensors(folder / "fp8.safetensors", saved.tensors());
  same_codes(fp8_projection::load(policy, ngemb::safetensors_checkpoint(folder / "fp8.safetensors"), "ngram", shape));

  const ngemb::projection_shape narrow{.num_tables = 2, .row_width = 100, .output_width = 8};
  const std::vector<float> small(800, 0.5f);
  const std::vector<ngemb::view<const float>> small_views(2, ngemb::view<const float>(small));
  const fp8_projection odd(policy, narrow, std::span<const ngemb::view<const float>>(small_views));
  ngemb::tensor_collection refused;
  CHECK_THROWS_WITH_AS(odd.save(policy, "ngram", refused),
                       "fused_projection<fp8_e4m3>: save needs row_width a multiple of 128 (each post_proj's scale "
                       "blocks), got 100",
                       ngemb::invalid_argument);
}

TEST_CASE("fused_projection::project_columns: the sub-tables' shares add up to the whole projection") {
  const ngemb::host_policy policy{};
  const ngemb::projection_shape shape{.num_tables = 4, .row_width = 3, .output_width = 5};
  std::mt19937 random(21);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> weights(4);
  std::vector<ngemb::view<const float>> views;
  for (auto& weight : weights) {
    weight.resize(15);
    std::generate(weight.begin(), weight.end(), [&] { return normal(random); });
    views.emplace_back(weight);
  }
  const ngemb::fused_projection<double> projection(policy, shape, std::span<const ngemb::view<const float>>(views));
  const std::size_t tokens = 6;
  std::vector<double> gathered(tokens * 12);
  std::generate(gathered.begin(), gathered.end(), [&] { return normal(random); });
  std::vector<double> whole(tokens * 5);
  projection.project(policy, tokens, ngemb::view<const double>(gathered), ngemb::view<double>(whole));
  // Sub-tables [0, 1) and [1, 4): each block's columns of the gathered rows, projected alone, then summed.
  std::vector<double> sum(tokens * 5, 0.0);
  for (const auto& [first, count] : {std::pair<int, int>{0, 1}, {1, 3}}) {
    std::vector<double> block;
    for (std::size_t token = 0; token < tokens; ++token) {
      const auto begin = gathered.begin() + static_cast<std::ptrdiff_t>(token * 12 + static_cast<std::size_t>(first) * 3);
      block.insert(block.end(), begin, begin + count * 3);
    }
    std::vector<double> share(tokens * 5, -1.0);
    projection.project_columns(policy, tokens, first * 3, count * 3, ngemb::view<const double>(block),
                               ngemb::view<double>(share));
    for (std::size_t i = 0; i < sum.size(); ++i) {
      sum[i] += share[i];
    }
  }
  for (std::size_t i = 0; i < sum.size(); ++i) {
    CHECK(sum[i] == doctest::Approx(whole[i]).epsilon(1e-12));
  }
  std::vector<double> none(tokens * 5, -1.0);
  projection.project_columns(policy, tokens, 12, 0, ngemb::view<const double>(), ngemb::view<double>(none));
  CHECK(std::all_of(none.begin(), none.end(), [](double value) { return value == 0.0; }));
  CHECK_THROWS_WITH_AS(projection.project_columns(policy, tokens, 9, 6, ngemb::view<const double>(gathered),
                                                  ngemb::view<double>(none)),
                       "fused_projection::project_columns: columns [9, 15) are not inside W_cat's [0, 12)",
                       ngemb::invalid_argument);
}
