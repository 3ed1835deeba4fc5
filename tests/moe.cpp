// moe/: the top-k routers against the independent fp64 reference (tests/reference/router_reference.py, tolerances in
// router_golden.hpp), and the errors of bad options and non-finite logits.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "ngemb/moe/router.hpp"
#include "router_golden.hpp"

namespace {

const ngemb::host_policy policy{2, 64};

}  // namespace

TEST_CASE("routers match the fp64 reference: choices, zero experts, selection bias, ties") {
  for (const auto& c : ngemb_test::router_cases()) {
    const auto run = [&](auto router) {
      const auto k = static_cast<std::size_t>(c.options.top_k);
      std::vector<std::int32_t> chosen(c.tokens() * k, -9);
      std::vector<float> weights(c.tokens() * k, -9.0f);
      router.route(policy, c.tokens(), ngemb::view<const float>(c.x), ngemb::view<std::int32_t>(chosen),
                   ngemb::view<float>(weights));
      c.check(chosen, weights);
      c.check_load(ngemb::routing_load(policy, c.options, ngemb::view<const std::int32_t>(chosen)));
    };
    if (c.softmax()) {
      run(c.make<ngemb::softmax_router<>>(policy));
    } else {
      run(c.make<ngemb::sigmoid_router<>>(policy));
    }
  }
}

TEST_CASE("router errors") {
  const std::vector<float> classifier(6 * 4, 0.25f);
  ngemb::router_options options{4, 2, 3, false, 1.0f};
  SUBCASE("k larger than E+Z") {
    options.top_k = 7;
    CHECK_THROWS_WITH_AS(ngemb::softmax_router<>(policy, options, 4, ngemb::view<const float>(classifier)),
                         doctest::Contains("top_k = 7 must be in [1, E+Z = 6]"), ngemb::invalid_argument);
  }
  SUBCASE("classifier of the wrong shape") {
    CHECK_THROWS_WITH_AS(ngemb::softmax_router<>(policy, options, 5, ngemb::view<const float>(classifier)),
                         doctest::Contains("(E+Z) x H = 6 x 5"), ngemb::shape_mismatch);
  }
  SUBCASE("NaN logits name the token and expert") {
    ngemb::softmax_router<> router(policy, options, 4, ngemb::view<const float>(classifier));
    std::vector<float> x = {1, 2, 3, 4, 1, std::numeric_limits<float>::quiet_NaN(), 0, 0};
    std::vector<std::int32_t> chosen(6);
    std::vector<float> weights(6);
    CHECK_THROWS_WITH_AS(router.route(policy, 2, ngemb::view<const float>(x), ngemb::view<std::int32_t>(chosen),
                                      ngemb::view<float>(weights)),
                         doctest::Contains("router: logits: value nan at row 1, column 0 is not finite"),
                         ngemb::invalid_argument);
    // Deferred: the routing runs memory-safely and the check raises later.
    ngemb::input_checks<ngemb::host_policy> checks(policy);
    router.route(policy, 2, ngemb::view<const float>(x), ngemb::view<std::int32_t>(chosen), ngemb::view<float>(weights),
                 &checks);
    CHECK_THROWS_AS(checks.raise_if_failed(), ngemb::invalid_argument);
    for (const std::int32_t expert : chosen) {
      CHECK((expert >= 0 && expert < 6));
    }
  }
  SUBCASE("load of indices outside the experts") {
    const std::vector<std::int32_t> chosen = {0, 5, 6, 1};
    CHECK_THROWS_WITH_AS(ngemb::routing_load(policy, options, ngemb::view<const std::int32_t>(chosen)),
                         doctest::Contains("1 chosen indices are outside [0, E+Z = 6)"), ngemb::invalid_argument);
  }
  SUBCASE("outputs of the wrong size") {
    ngemb::softmax_router<> router(policy, options, 4, ngemb::view<const float>(classifier));
    std::vector<float> x(8, 1.0f);
    std::vector<std::int32_t> chosen(5);
    std::vector<float> weights(6);
    CHECK_THROWS_AS(router.route(policy, 2, ngemb::view<const float>(x), ngemb::view<std::int32_t>(chosen),
                                 ngemb::view<float>(weights)),
                    ngemb::shape_mismatch);
  }
}
