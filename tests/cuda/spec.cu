// Speculative decoding on the device: every drafter's greedy output equals plain greedy decoding on the shipped
// tiny-longcat (speculative_golden.hpp), with the target model in device memory.
#include <doctest/doctest.h>

#include "ngemb/policy/device_policy.cuh"
#include "ngemb/presets/longcat.hpp"
#include "ngemb/spec/early_rejection.hpp"
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
