// The presets on a device: the transformers goldens of tests/presets.cpp (longcat_flash_golden.hpp) with every
// part in device memory (MLA with its latent cache, YaRN, zero experts, the n-gram embedding), and a model saved
// from the device reloaded on the host giving the same logits.
#include <doctest/doctest.h>

#include <cstddef>
#include <string>

#include "longcat_flash_golden.hpp"
#include "tiny_longcat_golden.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/presets/longcat.hpp"
#include "temp_folder.hpp"

namespace {

// The goldens hold fp32 weights throughout.
template <class Policy>
using plain_lm = typename ngemb::presets::longcat_flash<Policy, float>::model;
template <class Policy>
using ngram_lm = typename ngemb::presets::longcat_flash_lite<Policy, float>::model;

const ngemb::device_policy device{};

}  // namespace

// One TEST_CASE per golden: doctest's SUBCASEs do not repeat inside a loop.
TEST_CASE("device: presets::longcat_flash, q LoRA and default RoPE matches transformers") {
  ngemb_test::check_against_transformers<plain_lm<ngemb::device_policy>>(device, "plain");
}

TEST_CASE("device: presets::longcat_flash, q_lora_rank null matches transformers") {
  ngemb_test::check_against_transformers<plain_lm<ngemb::device_policy>>(device, "q_proj");
}

TEST_CASE("device: presets::longcat_flash, YaRN in rope_parameters, norm_topk_prob matches transformers") {
  ngemb_test::check_against_transformers<plain_lm<ngemb::device_policy>>(device, "yarn");
}

TEST_CASE("device: presets::longcat_flash, YaRN in the old rope_scaling spelling matches transformers") {
  ngemb_test::check_against_transformers<plain_lm<ngemb::device_policy>>(device, "yarn_rope_scaling");
}

TEST_CASE("device: presets::longcat_flash, attention and router biases matches transformers") {
  ngemb_test::check_against_transformers<plain_lm<ngemb::device_policy>>(device, "attention_bias");
}

TEST_CASE("device: presets::longcat_flash_lite, N=3, K=2 matches transformers") {
  ngemb_test::check_against_transformers<ngram_lm<ngemb::device_policy>>(device, "ngram_n3k2");
}

TEST_CASE("device: presets::longcat_flash_lite, N=4, K=3, YaRN matches transformers") {
  ngemb_test::check_against_transformers<ngram_lm<ngemb::device_policy>>(device, "ngram_n4k3");
}

TEST_CASE("device: a LongCat-Flash-Lite model saved from device memory loads on the host with the same logits") {
  const std::string name = "ngram_n4k3";
  const ngemb_test::longcat_flash_golden expected(name);
  auto on_device = ngram_lm<ngemb::device_policy>::load(device, ngemb_test::longcat_flash_dir / name);
  const ngemb_test::temp_folder folder;
  on_device.save(device, folder.path());
  const ngemb::host_policy host;
  auto on_host = ngram_lm<ngemb::host_policy>::load(host, folder.path());
  const auto every = ngemb::logits_for::every_token;
  const auto device_logits = ngemb_test::run_batch(on_device, device, expected.sequences,
                                                   ngemb_test::start(on_device, 3), every);
  const auto host_logits = ngemb_test::run_batch(on_host, host, expected.sequences, ngemb_test::start(on_host, 3), every);
  REQUIRE(device_logits.size() == host_logits.size());
  for (std::size_t i = 0; i < host_logits.size(); ++i) {
    CHECK(device_logits[i] == doctest::Approx(host_logits[i]).epsilon(1e-4));
  }
}

TEST_CASE("device: the shipped tiny-longcat gives PyTorch's logits and greedy bytes") {
  ngemb_test::check_tiny_longcat<typename ngemb::presets::longcat_flash_lite<ngemb::device_policy>::model>(device);
}

TEST_CASE("device: tiny-longcat with bf16 W_cat, dense FFNs and lm_head gives the same goldens") {
  ngemb_test::check_tiny_longcat<
      typename ngemb::presets::longcat_flash_lite<ngemb::device_policy, ngemb::bf16, ngemb::bf16>::model>(device);
}
