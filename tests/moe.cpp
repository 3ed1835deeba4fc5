// moe/: the top-k routers against the independent fp64 reference (tests/reference/router_reference.py): chosen
// experts exactly (ties to the lowest index), weights within 1e-5 relative (fp32 logits, scores and
// normalisation: a few roundings of values near 1), and the errors of bad options and non-finite logits.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ngemb/moe/router.hpp"

namespace {

const ngemb::host_policy policy{2, 64};

nlohmann::json golden_cases() {
  std::ifstream file(std::filesystem::path(NGEMB_REFERENCE_DIR) / "router" / "golden.json");
  return nlohmann::json::parse(file).at("cases");
}

std::vector<float> floats(const nlohmann::json& values) { return values.get<std::vector<float>>(); }

template <class Router>
void check_case(const nlohmann::json& c) {
  ngemb::router_options options;
  options.routed_experts = c.at("routed_experts");
  options.zero_experts = c.at("zero_experts");
  options.top_k = c.at("top_k");
  options.normalize_top_k = c.at("normalize_top_k");
  options.routed_scaling_factor = c.at("routed_scaling_factor");
  const std::int64_t hidden = c.at("hidden");
  const auto classifier = floats(c.at("classifier"));
  const auto classifier_bias = c.contains("classifier_bias") ? floats(c.at("classifier_bias")) : std::vector<float>{};
  const auto selection_bias = c.contains("selection_bias") ? floats(c.at("selection_bias")) : std::vector<float>{};
  const auto x = floats(c.at("x"));
  Router router(policy, options, hidden, ngemb::view<const float>(classifier), ngemb::view<const float>(classifier_bias),
                ngemb::view<const float>(selection_bias));
  const std::size_t tokens = x.size() / static_cast<std::size_t>(hidden);
  const auto k = static_cast<std::size_t>(options.top_k);
  std::vector<std::int32_t> chosen(tokens * k, -9);
  std::vector<float> weights(tokens * k, -9.0f);
  router.route(policy, tokens, ngemb::view<const float>(x), ngemb::view<std::int32_t>(chosen), ngemb::view<float>(weights));
  for (std::size_t token = 0; token < tokens; ++token) {
    for (std::size_t pick = 0; pick < k; ++pick) {
      INFO(c.at("name").get<std::string>() << " token " << token << " pick " << pick);
      CHECK(chosen[token * k + pick] == c.at("chosen")[token][pick].get<int>());
      const double want = c.at("weights")[token][pick].get<double>();
      CHECK(std::abs(weights[token * k + pick] - want) <= 1e-5 * std::abs(want) + 1e-12);
    }
  }
}

}  // namespace

TEST_CASE("routers match the fp64 reference: choices, zero experts, selection bias, ties") {
  for (const auto& c : golden_cases()) {
    if (c.at("scoring") == "softmax") {
      check_case<ngemb::softmax_router<>>(c);
    } else {
      check_case<ngemb::sigmoid_router<>>(c);
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
