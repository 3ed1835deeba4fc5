// cache/: prefill + speculative decode through the cache equals one-shot hashing; slot management and errors.
#include <doctest/doctest.h>

#include "cache_property.hpp"
#include "ngemb/policy/host_policy.hpp"

TEST_CASE("cache steps with random drafts and rollbacks equal one-shot ids") {
  auto lite = ngemb::ngram_config::longcat_flash_lite();
  for (unsigned seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    ngemb_test::check_cache_matches_one_shot(ngemb::host_policy{}, lite, seed);
  }
  const auto small = ngemb_test::small_vocabulary_config();
  for (unsigned seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    ngemb_test::check_cache_matches_one_shot(ngemb::host_policy{3, 1}, small, seed);
  }
  auto bigram = small;
  bigram.max_order = 2;
  bigram.eos_token.reset();
  ngemb_test::check_cache_matches_one_shot(ngemb::host_policy{}, bigram, 5);
}

TEST_CASE("cache slots: allocation, release, reset and misuse") {
  const auto lite = ngemb::ngram_config::longcat_flash_lite();
  const ngemb::host_policy policy;
  ngemb::ngram_cache<> cache(policy, lite, 2, 3);
  const auto first = cache.allocate();
  const auto second = cache.allocate();
  CHECK(first == 0);
  CHECK(second == 1);
  CHECK_THROWS_WITH_AS(cache.allocate(), "ngram_cache: all 2 slots are in use", ngemb::invalid_argument);
  const std::vector<std::int32_t> tokens{7, 8, 9, 10};
  const std::vector<std::int64_t> offsets{0, 4};
  const std::vector<std::int32_t> slot_list{first};
  const ngemb::ragged_view<const std::int32_t> batch(tokens, offsets);
  CHECK_THROWS_WITH_AS(cache.append(ngemb::view<const std::int32_t>(slot_list), batch),
                       "ngram_cache::append: slot 0 would hold 4 pending tokens, more than max_draft = 3",
                       ngemb::invalid_argument);
  cache.advance(ngemb::view<const std::int32_t>(slot_list), batch);  // any length: only the last N-1 stay
  CHECK(cache.window(first) == std::vector<std::int32_t>{8, 9, 10});
  const std::vector<std::int64_t> two{0, 2};
  cache.append(ngemb::view<const std::int32_t>(slot_list), ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(tokens.data(), 2), two));
  CHECK(cache.pending(first) == 2);
  CHECK_THROWS_WITH_AS(cache.advance(ngemb::view<const std::int32_t>(slot_list), batch),
                       "ngram_cache::advance: slot 0 has 2 pending draft tokens; commit them first",
                       ngemb::invalid_argument);
  const std::vector<std::int32_t> too_many{3};
  CHECK_THROWS_WITH_AS(cache.commit(ngemb::view<const std::int32_t>(slot_list), ngemb::view<const std::int32_t>(too_many)),
                       "ngram_cache::commit: slot 0 has 2 pending tokens, cannot accept 3", ngemb::invalid_argument);
  const std::vector<std::int32_t> one{1};
  cache.commit(ngemb::view<const std::int32_t>(slot_list), ngemb::view<const std::int32_t>(one));
  CHECK(cache.window(first) == std::vector<std::int32_t>{9, 10, 7});
  const std::vector<std::int32_t> twice{first, first};
  const std::vector<std::int64_t> pair{0, 1, 2};
  CHECK_THROWS_WITH_AS(cache.advance(ngemb::view<const std::int32_t>(twice), ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(tokens.data(), 2), pair)),
                       "ngram_cache::advance: slot 0 is listed twice in one batch", ngemb::invalid_argument);
  const std::vector<std::int32_t> bad_token{131072};
  const std::vector<std::int64_t> single{0, 1};
  CHECK_THROWS_AS(cache.advance(ngemb::view<const std::int32_t>(slot_list), ngemb::ragged_view<const std::int32_t>(bad_token, single)),
                  ngemb::invalid_argument);
  cache.reset(first);
  CHECK(cache.window(first).empty());
  cache.free(second);
  CHECK_THROWS_WITH_AS(cache.reset(second),
                       "ngram_cache::reset: slot 1 is not an allocated slot (the cache has 2 slots)",
                       ngemb::invalid_argument);
  CHECK(cache.allocate() == second);
}

TEST_CASE("cache: one slot at a time") {
  const ngemb::host_policy policy;
  ngemb::ngram_cache<> cache(policy, ngemb::ngram_config::longcat_flash_lite(), 4, 4);
  const auto slot = cache.allocate();
  const std::vector<std::int32_t> prompt{11, 12, 13, 14, 15};
  const std::vector<std::int32_t> drafts{21, 22, 23};
  cache.advance(slot, prompt);
  cache.append(slot, drafts);
  CHECK(cache.window(slot) == std::vector<std::int32_t>{13, 14, 15, 21, 22, 23});
  cache.commit(slot, 2);
  CHECK(cache.window(slot) == std::vector<std::int32_t>{15, 21, 22});
  CHECK(cache.pending(slot) == 0);
  cache.free(slot);
  CHECK(cache.free_slot_count() == 4);
}

TEST_CASE("cache: arguments are validated before anything is allocated (issue 9)") {
  const ngemb::host_policy policy;
  const auto lite = ngemb::ngram_config::longcat_flash_lite();
  // A default config used to make a look-back of -1 and a SIZE_MAX-sized buffer.
  CHECK_THROWS_WITH_AS(ngemb::ngram_cache<>(policy, ngemb::ngram_config{}, 1, 0),
                       doctest::Contains("vocab_size must be in [1, 2^31]"), ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(ngemb::ngram_cache<>(policy, lite, std::size_t{1} << 60, 0),
                       "ngram_cache: max_slots must be at most 2^24, got 1152921504606846976", ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(ngemb::ngram_cache<>(policy, lite, 4, INT32_MAX),
                       "ngram_cache: max_draft must be in [0, 4096], got 2147483647", ngemb::invalid_argument);
  CHECK_THROWS_AS(ngemb::ngram_cache<>(policy, lite, 4, -1), ngemb::invalid_argument);
}

TEST_CASE("cache: allocate() returns the lowest free slot, as documented") {
  const ngemb::host_policy policy;
  ngemb::ngram_cache<> cache(policy, ngemb::ngram_config::longcat_flash_lite(), 5, 0);
  for (int slot = 0; slot < 5; ++slot) {
    CHECK(cache.allocate() == slot);
  }
  cache.free(1);
  cache.free(3);
  cache.free(0);
  CHECK(cache.allocate() == 0);
  cache.free(4);
  CHECK(cache.allocate() == 1);  // the most recently freed is 4
  CHECK(cache.allocate() == 3);
  CHECK(cache.allocate() == 4);
  CHECK(cache.free_slot_count() == 0);
}
