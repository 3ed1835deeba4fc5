// The embedding forward on the device against the same fp64 reference and tolerances as tests/embed.cpp: tables,
// projections and LayerNorm weights in device memory, cuBLAS for the fused GEMM, one-shot and through the cache.
#include <doctest/doctest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "embedding_golden.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/embed/per_layer_ngram_embedding.hpp"
#include "ngemb/ffn/ngram_gated_ffn.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/store/table_store.hpp"

namespace {

using ngemb::device_policy;
using ngemb_test::embedding_golden;

template <class Store, class Acc = float>
void check_on_device(const std::string& name, double tolerance) {
  const device_policy policy{};
  const embedding_golden golden = ngemb_test::load_embedding_golden(name);
  using projection = ngemb::fused_projection<Acc, device_policy>;
  {
    auto embedding = ngemb::ngram_embedding<ngemb::longcat_hash, Store, projection>::load(policy, golden.folder);
    ngemb_test::check_prefill<float>(policy, embedding, golden, "none", std::max(tolerance, 0x1p-23));
    ngemb_test::check_prefill<ngemb::bf16>(policy, embedding, golden, "none", 0x1p-8);
    ngemb_test::check_through_cache(policy, embedding, golden, "none", 21);
  }
  {
    auto embedding = ngemb::ngram_embedding<ngemb::longcat_hash, Store, projection,
                                            ngemb::sqrt_hidden_amplification>::load(policy, golden.folder);
    ngemb_test::check_prefill<float>(policy, embedding, golden, "sqrt_hidden", std::max(tolerance, 0x1p-23));
  }
  {
    auto embedding = ngemb::ngram_embedding<ngemb::longcat_hash, Store, projection,
                                            ngemb::layer_norm_amplification<device_policy>>::load(policy, golden.folder);
    ngemb_test::check_prefill<float>(policy, embedding, golden, "layer_norm", std::max(tolerance, 0x1p-23));
    ngemb_test::check_through_cache(policy, embedding, golden, "layer_norm", 22);
  }
}

}  // namespace

TEST_CASE("device forward: fp32, bf16 and fp16 tables") {
  check_on_device<ngemb::table_store<float, device_policy>>("f32_single", 1e-5);
  check_on_device<ngemb::table_store<float, device_policy>, double>("f32_single", 1e-12);
  check_on_device<ngemb::table_store<ngemb::bf16, device_policy>>("bf16_sharded", 1e-5);
  check_on_device<ngemb::table_store<ngemb::fp16, device_policy>>("f16_bigram", 1e-5);
}

TEST_CASE("device PLNE and gated FFN") {
  const device_policy policy{};
  const auto golden = ngemb_test::load_embedding_golden("plne");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(golden.folder);
  const auto inputs = embedding_golden::flatten(golden.expected.at("inputs"));
  const auto x = ngemb_test::to_policy(policy, std::vector<float>(inputs.begin(), inputs.end()));
  const std::size_t count = golden.batch.tokens.size();
  const std::int64_t hidden = golden.config.hidden_size;
  auto plne = ngemb::per_layer_ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float, device_policy>,
                                               ngemb::fused_projection<float, device_policy>>::load(policy, checkpoint,
                                                                                                  golden.config, 2);
  const ngemb_test::policy_batch<device_policy> batch(policy, golden.batch);
  plne.hash(policy, batch.view());
  for (int layer = 0; layer < plne.num_layers(); ++layer) {
    const auto& expected = golden.expected.at("plne").at(static_cast<std::size_t>(layer));
    ngemb::device_buffer<float> e(policy, count * 16);
    plne.embed(policy, layer, e.as_view());
    CHECK(ngemb_test::worst_row_error(ngemb_test::to_host(policy, ngemb::view<const float>(e.as_view())),
                                      embedding_golden::flatten(expected.at("embedding")), 16) <= 1e-5);
    auto ffn = ngemb::ngram_gated_ffn<float, device_policy>::load(
        policy, *checkpoint, ngemb::ngram_names::layer(layer) + ".ngram_ffn", {.hidden = hidden, .width = 16});
    ngemb::device_buffer<float> y(policy, count * static_cast<std::size_t>(hidden));
    ffn.forward(policy, count, x.as_view(), ngemb::view<const float>(e.as_view()), y.as_view());
    CHECK(ngemb_test::worst_row_error(ngemb_test::to_host(policy, ngemb::view<const float>(y.as_view())),
                                      embedding_golden::flatten(expected.at("ffn")),
                                      static_cast<std::size_t>(hidden)) <= 1e-5);
  }
}

TEST_CASE("device errors: tokens outside the vocabulary, output size") {
  const device_policy policy{};
  const auto golden = ngemb_test::load_embedding_golden("f32_single");
  auto embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float, device_policy>,
                                          ngemb::fused_projection<float, device_policy>>::load(policy, golden.folder);
  ngemb_test::token_batch bad;
  bad.add({1, 64, 3});
  const ngemb_test::policy_batch<device_policy> batch(policy, bad);
  ngemb::device_buffer<float> out(policy, 3 * 48);
  CHECK_THROWS_AS(embedding.forward(policy, batch.view(), out.as_view()), ngemb::token_out_of_range);
  ngemb::device_buffer<float> small(policy, 3 * 48 - 1);
  CHECK_THROWS_AS(embedding.forward(policy, batch.view(), small.as_view()), ngemb::shape_mismatch);
}

TEST_CASE("device deferred checks: no synchronisation before the launch, bad tokens reported later") {
  const device_policy policy{};
  const auto golden = ngemb_test::load_embedding_golden("f32_single");
  auto embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float, device_policy>,
                                          ngemb::fused_projection<float, device_policy>>::load(policy, golden.folder);
  ngemb_test::token_batch bad;
  bad.add({1, 2000000000, 3, -5});
  const ngemb_test::policy_batch<device_policy> batch(policy, bad);
  ngemb::device_buffer<float> out(policy, 4 * 48);
  ngemb::input_checks<device_policy> checks(policy);
  embedding.forward_async(policy, batch.view(), out.as_view(), checks);
  CHECK_THROWS_AS(checks.raise_if_failed(), ngemb::token_out_of_range);
  CHECK(cudaStreamSynchronize(policy.stream) == cudaSuccess);  // the kernels ran memory-safely
}
