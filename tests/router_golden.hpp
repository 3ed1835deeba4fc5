#pragma once
// The router cases written by tests/reference/router_reference.py and the check both the host (tests/moe.cpp) and
// device (tests/cuda/moe.cu) tests apply: chosen experts exactly (ties to the lowest index), weights within 1e-5
// relative (fp32 logits, scores and normalisation: a few roundings of values near 1).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ngemb/moe/router.hpp"

namespace ngemb_test {

/// A router's parameters as the reference cases store them (router and MoE cases alike).
struct router_parameters {
  std::string scoring;
  ngemb::router_options options;
  std::vector<float> classifier;
  std::vector<float> classifier_bias;
  std::vector<float> selection_bias;

  explicit router_parameters(const nlohmann::json& c)
      : scoring(c.at("scoring")),
        classifier(c.at("classifier").get<std::vector<float>>()),
        classifier_bias(c.value("classifier_bias", std::vector<float>{})),
        selection_bias(c.value("selection_bias", std::vector<float>{})) {
    options.routed_experts = c.at("routed_experts");
    options.zero_experts = c.at("zero_experts");
    options.top_k = c.at("top_k");
    options.normalize_top_k = c.at("normalize_top_k");
    options.routed_scaling_factor = c.at("routed_scaling_factor");
  }

  [[nodiscard]] bool softmax() const { return scoring == "softmax"; }

  template <class Router, class Policy>
  [[nodiscard]] Router router_for(const Policy& policy, std::int64_t hidden) const {
    return Router(policy, options, hidden,
                  {.classifier = ngemb::view<const float>(classifier),
                   .classifier_bias = ngemb::view<const float>(classifier_bias),
                   .selection_bias = ngemb::view<const float>(selection_bias)});
  }
};

struct router_case : router_parameters {
  nlohmann::json golden;
  std::int64_t hidden = 0;
  std::vector<float> x;

  explicit router_case(const nlohmann::json& c)
      : router_parameters(c), golden(c), hidden(c.at("hidden")), x(c.at("x").get<std::vector<float>>()) {}

  [[nodiscard]] std::size_t tokens() const { return x.size() / static_cast<std::size_t>(hidden); }

  template <class Router, class Policy>
  [[nodiscard]] Router make(const Policy& policy) const {
    return router_for<Router>(policy, hidden);
  }

  void check(const std::vector<std::int32_t>& chosen, const std::vector<float>& weights) const {
    const auto k = static_cast<std::size_t>(options.top_k);
    for (std::size_t token = 0; token < tokens(); ++token) {
      for (std::size_t pick = 0; pick < k; ++pick) {
        INFO(golden.at("name").get<std::string>() << " token " << token << " pick " << pick);
        CHECK(chosen[token * k + pick] == golden.at("chosen")[token][pick].get<int>());
        const double want = golden.at("weights")[token][pick].get<double>();
        CHECK(std::abs(weights[token * k + pick] - want) <= 1e-5 * std::abs(want) + 1e-12);
      }
    }
  }

  /// The load statistics count the reference's choices.
  void check_load(const ngemb::routing_statistics& statistics) const {
    std::vector<std::int64_t> expected(static_cast<std::size_t>(options.num_experts()), 0);
    std::int64_t zero = 0;
    for (const auto& token : golden.at("chosen")) {
      for (const auto& expert : token) {
        ++expected[expert.get<std::size_t>()];
        zero += expert.get<int>() >= options.routed_experts ? 1 : 0;
      }
    }
    const auto assignments = static_cast<std::int64_t>(tokens()) * options.top_k;
    CHECK(statistics.load == expected);
    CHECK(statistics.assignments() == assignments);
    CHECK(statistics.zero_share() == doctest::Approx(static_cast<double>(zero) / static_cast<double>(assignments)));
  }
};

inline std::vector<router_case> router_cases() {
  std::ifstream file(std::filesystem::path(NGEMB_REFERENCE_DIR) / "router" / "golden.json");
  const nlohmann::json golden = nlohmann::json::parse(file);  // a range-for would not keep a temporary alive
  std::vector<router_case> cases;
  for (const auto& c : golden.at("cases")) {
    cases.emplace_back(c);
  }
  return cases;
}

}  // namespace ngemb_test
