// The routers on the device: the same fp64 reference and tolerances as tests/moe.cpp (choices exact, ties to the
// lowest index, weights within 1e-5 relative), with the logits GEMM in cuBLAS and the selection in a kernel.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "embedding_golden.hpp"
#include "ngemb/moe/router.hpp"
#include "ngemb/policy/device_policy.cuh"

TEST_CASE("device routers match the fp64 reference") {
  const ngemb::device_policy policy{};
  std::ifstream file(std::filesystem::path(NGEMB_REFERENCE_DIR) / "router" / "golden.json");
  for (const auto& c : nlohmann::json::parse(file).at("cases")) {
    ngemb::router_options options;
    options.routed_experts = c.at("routed_experts");
    options.zero_experts = c.at("zero_experts");
    options.top_k = c.at("top_k");
    options.normalize_top_k = c.at("normalize_top_k");
    options.routed_scaling_factor = c.at("routed_scaling_factor");
    const std::int64_t hidden = c.at("hidden");
    const auto classifier = c.at("classifier").get<std::vector<float>>();
    const auto classifier_bias = c.value("classifier_bias", std::vector<float>{});
    const auto selection_bias = c.value("selection_bias", std::vector<float>{});
    const auto x_host = c.at("x").get<std::vector<float>>();
    const std::size_t tokens = x_host.size() / static_cast<std::size_t>(hidden);
    const auto k = static_cast<std::size_t>(options.top_k);
    const auto x = ngemb_test::to_policy(policy, x_host);
    ngemb::device_buffer<std::int32_t> chosen(policy, tokens * k);
    ngemb::device_buffer<float> weights(policy, tokens * k);
    const auto run = [&](auto router) {
      router.route(policy, tokens, x.as_view(), chosen.as_view(), weights.as_view());
      const auto got_chosen = ngemb_test::to_host(policy, ngemb::view<const std::int32_t>(chosen.as_view()));
      const auto got_weights = ngemb_test::to_host(policy, ngemb::view<const float>(weights.as_view()));
      for (std::size_t token = 0; token < tokens; ++token) {
        for (std::size_t pick = 0; pick < k; ++pick) {
          INFO(c.at("name").get<std::string>() << " token " << token << " pick " << pick);
          CHECK(got_chosen[token * k + pick] == c.at("chosen")[token][pick].get<int>());
          const double want = c.at("weights")[token][pick].get<double>();
          CHECK(std::abs(got_weights[token * k + pick] - want) <= 1e-5 * std::abs(want) + 1e-12);
        }
      }
    };
    const ngemb::view<const float> classifier_view(classifier);
    if (c.at("scoring") == "softmax") {
      run(ngemb::softmax_router<ngemb::device_policy>(policy, options, hidden, classifier_view,
                                                      ngemb::view<const float>(classifier_bias),
                                                      ngemb::view<const float>(selection_bias)));
    } else {
      run(ngemb::sigmoid_router<ngemb::device_policy>(policy, options, hidden, classifier_view,
                                                      ngemb::view<const float>(classifier_bias),
                                                      ngemb::view<const float>(selection_bias)));
    }
  }
}
