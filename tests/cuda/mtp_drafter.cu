// The MTP drafter on a device: tests/spec.cpp's checks against a fresh MTP cache fed the accepted history
// (mtp_drafter_check.hpp) with the model, the module's cache and every scratch row in device memory, and speculative
// greedy decoding with it against plain greedy decoding (speculative_golden.hpp).
#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

#include "mtp_drafter_check.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/presets/longcat.hpp"
#include "ngemb/spec/mtp_drafter.hpp"
#include "speculative_golden.hpp"

namespace {

const ngemb::device_policy device{};

}  // namespace

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
