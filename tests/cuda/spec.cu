// Speculative decoding on the device: every drafter's greedy output equals plain greedy decoding on the shipped
// tiny-longcat (speculative_golden.hpp), with the target model in device memory; the MTP drafter also against a
// fresh MTP cache fed the accepted history (mtp_drafter_check.hpp), with its cache and scratch rows on the device.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mtp_drafter_check.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/presets/longcat.hpp"
#include "ngemb/spec/early_rejection.hpp"
#include "ngemb/spec/model_drafter.hpp"
#include "ngemb/spec/mtp_drafter.hpp"
#include "ngemb/spec/ngram_drafter.hpp"
#include "ngemb/spec/prompt_lookup.hpp"
#include "speculative_golden.hpp"

namespace {

using device_lm = ngemb::presets::longcat_flash_lite<ngemb::device_policy>::model;
const ngemb::device_policy device{};

}  // namespace

TEST_CASE("device: speculative greedy decoding with prompt lookup equals plain greedy decoding, k = 1..8") {
  auto model = device_lm::load(device, ngemb_test::tiny_longcat_model, ngemb_test::speculation_capacity);
  ngemb::prompt_lookup_drafter drafter(model.vocab_size(), {.min_n = 1, .max_n = 3});
  ngemb_test::check_speculative_greedy(device, model, drafter, 1.2);
}

TEST_CASE("device: speculative greedy decoding with the n-gram-embedding drafter equals plain greedy decoding") {
  auto model = device_lm::load(device, ngemb_test::tiny_longcat_model, ngemb_test::speculation_capacity);
  ngemb::ngram_embedding_drafter<device_lm> drafter(device, model);
  ngemb_test::check_speculative_greedy(device, model, drafter, 1.1);
  CHECK(model.embedding_counts().reused > 0);
}

TEST_CASE("device: speculative greedy decoding with early rejection over prompt lookup equals plain greedy decoding") {
  auto model = device_lm::load(device, ngemb_test::tiny_longcat_model, ngemb_test::speculation_capacity);
  ngemb::prompt_lookup_drafter lookup(model.vocab_size(), {.min_n = 1, .max_n = 3});
  ngemb::early_rejection<ngemb::prompt_lookup_drafter, device_lm> drafter(device, model, lookup, 0.05f);
  ngemb_test::check_speculative_greedy(device, model, drafter, 1.05);
}

TEST_CASE("device: speculative greedy decoding with a draft model equals plain greedy decoding, k = 1..8") {
  auto model = device_lm::load(device, ngemb_test::tiny_longcat_model, ngemb_test::speculation_capacity);
  {  // self-draft: a second instance of the target accepts every draft
    auto draft = device_lm::load(device, ngemb_test::tiny_longcat_model, ngemb_test::speculation_capacity);
    ngemb::draft_model_drafter drafter(device, draft);
    ngemb_test::check_speculative_greedy(device, model, drafter, 1.9);
  }
  // The paper's draft: tiny-longcat without its n-gram tables (about a quarter of its drafts are accepted at k = 1).
  using plain_lm = ngemb::presets::longcat_flash<ngemb::device_policy>::model;
  auto draft = plain_lm::load(device, ngemb_test::tiny_longcat_model, ngemb_test::speculation_capacity,
                              {.drop_ngram_embedding = true});
  ngemb::draft_model_drafter drafter(device, draft);
  ngemb_test::check_speculative_greedy(device, model, drafter, 1.15);
}

TEST_CASE("device: mtp_drafter's drafts equal a fresh MTP cache fed the accepted history, batched, greedy") {
  const std::vector<std::vector<std::int32_t>> prompts{
      ngemb_test::mtp_prompt(20000, 19), ngemb_test::mtp_prompt(40000, 47), ngemb_test::mtp_prompt(60000, 8)};
  CHECK(ngemb_test::run_mtp_drafter_check(device, prompts, {3, 1, 5}, 5, {}, [](int round, std::size_t b) {
          return (round + static_cast<int>(b)) % 4;
        }) == 5 * 9);
}

TEST_CASE("device: mtp_drafter's sampled drafts and q rows equal the fresh computation's") {
  CHECK(ngemb_test::run_mtp_drafter_check(device, {ngemb_test::mtp_prompt(5000, 33)}, {4}, 5,
                                          {.temperature = 1.0f, .seed = 11},
                                          [](int round, std::size_t) { return round % 5; }) == 4 * 5);
}

TEST_CASE("device: speculative greedy decoding with the MTP drafter equals plain greedy decoding, k = 1..8") {
  using lm = ngemb_test::mtp_lm<ngemb::device_policy>;
  auto model = lm::load(device, ngemb_test::tiny_longcat_model, ngemb_test::speculation_capacity, {.mtp = true});
  ngemb::mtp_drafter<lm> drafter(device, model);
  ngemb_test::check_speculative_greedy(device, model, drafter, 1.5);
}
