// policy/: for_each_n covers every index exactly once on any thread count; input_checks raise typed errors.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ngemb/core/input_checks.hpp"
#include "ngemb/policy/host_policy.hpp"

TEST_CASE("host for_each_n visits every index once, serial and threaded") {
  for (unsigned threads : {1u, 2u, 3u, 0u}) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{100003}}) {
      std::vector<std::atomic<int>> visits(n);
      const ngemb::host_policy policy{threads, 1000};
      ngemb::for_each_n(policy, n, [&](std::size_t i) { visits[i].fetch_add(1); });
      std::size_t wrong = 0;
      for (auto& count : visits) {
        wrong += count.load() != 1;
      }
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("host for_each_n rethrows a worker's exception") {
  const ngemb::host_policy policy{4, 10};
  CHECK_THROWS_AS(ngemb::for_each_n(policy, 1000,
                                    [](std::size_t i) {
                                      if (i == 977) {
                                        throw std::runtime_error("element 977");
                                      }
                                    }),
                  std::runtime_error);
}

TEST_CASE("input_checks name the first bad offset and the first bad token") {
  const ngemb::host_policy policy{2, 8};
  const std::vector<std::int32_t> tokens{1, 2, 3, 4, 99, 5, -3};
  const auto message_of = [&](auto&& run) -> std::string {
    try {
      run();
    } catch (const ngemb::error& failure) {
      return failure.what();
    }
    return "no exception";
  };
  const std::vector<std::int64_t> good{0, 2, 2, 7};
  const std::vector<std::int64_t> decreasing{0, 3, 2, 7};
  const std::vector<std::int64_t> short_end{0, 2, 6};
  const std::vector<std::int64_t> bad_start{1, 2, 7};
  const auto check_offsets = [&](const std::vector<std::int64_t>& offsets) {
    return message_of([&] {
      ngemb::input_checks<ngemb::host_policy> checks(policy);
      checks.ragged(ngemb::ragged_view<const std::int32_t>(tokens, offsets), "batch");
      checks.raise_if_failed();
    });
  };
  CHECK(check_offsets(good) == "no exception");
  CHECK(check_offsets(decreasing) == "batch: offsets[2] = 2 is less than offsets[1] = 3");
  CHECK(check_offsets(short_end) == "batch: offsets[2] = 6 but there are 7 values");
  CHECK(check_offsets(bad_start) == "batch: offsets[0] = 1 but must be 0");
  CHECK(check_offsets({}) == "batch: offsets must hold num_sequences + 1 entries, got none");

  ngemb::input_checks<ngemb::host_policy> checks(policy);
  checks.ragged(ngemb::ragged_view<const std::int32_t>(tokens, good), "tokens");
  checks.in_vocabulary(ngemb::ragged_view<const std::int32_t>(tokens, good), 50, "tokens");
  CHECK_THROWS_WITH_AS(checks.raise_if_failed(),
                       "tokens: token id 99 at sequence 2, position 2 (flat index 4) is outside [0, 50)",
                       ngemb::invalid_argument);
}
