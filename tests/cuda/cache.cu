// The n-gram cache property on the device: step-by-step ids through a device cache equal one-shot host ids.
#include <doctest/doctest.h>

#include "cache_property.hpp"
#include "ngemb/policy/device_policy.cuh"

TEST_CASE("device cache steps with random drafts and rollbacks equal one-shot ids") {
  auto lite = ngemb::ngram_config::longcat_flash_lite();
  for (unsigned seed = 1; seed <= 6; ++seed) {
    CAPTURE(seed);
    ngemb_test::check_cache_matches_one_shot(ngemb::device_policy{}, lite, seed);
  }
  const auto small = ngemb_test::small_vocabulary_config();
  for (unsigned seed = 1; seed <= 6; ++seed) {
    CAPTURE(seed);
    ngemb_test::check_cache_matches_one_shot(ngemb::device_policy{}, small, seed);
  }
}
