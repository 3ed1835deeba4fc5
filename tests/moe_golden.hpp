#pragma once
// The SwiGLU and MoE cases written by tests/reference/moe_reference.py (float64 PyTorch) and the checks the host
// (tests/moe.cpp) and device (tests/cuda/moe.cu) tests apply to them.
//
// Tolerance: every output row within 1e-4 of the row's largest reference magnitude. The forward evaluates in fp32
// (unit roundoff 6e-8): dot products of H and I terms (at most 24 here), SiLU's exp, softmax/sigmoid scores and a
// sum of k weighted expert outputs, each adding a few roundings of values of order one; 1e-4 leaves three orders of
// magnitude of margin while still catching a wrong weight, pick or activation (errors of order 1e-2 and more).
// bf16 cases store bf16-exact weights and the reference uses exactly those, so fp32 and bf16 storage of them must
// give the same outputs within the same tolerance; the routing's chosen experts must match exactly (the generator
// keeps a 1e-4 margin between the k-th and (k+1)-th selection key).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ngemb/core/dtype.hpp"
#include "ngemb/ffn/swiglu.hpp"
#include "ngemb/moe/moe.hpp"
#include "ngemb/moe/router.hpp"
#include "router_golden.hpp"

namespace ngemb_test {

inline constexpr double moe_tolerance = 1e-4;

inline const nlohmann::json& moe_golden() {
  static const nlohmann::json golden = [] {
    std::ifstream file(std::filesystem::path(NGEMB_REFERENCE_DIR) / "moe" / "golden.json");
    return nlohmann::json::parse(file);
  }();
  return golden;
}

/// fp32 values as Weight (exact for the bf16 cases' bf16-exact weights).
template <class Weight>
std::vector<Weight> as_weights(const std::vector<float>& values) {
  std::vector<Weight> converted(values.size());
  std::transform(values.begin(), values.end(), converted.begin(),
                 [](float value) { return ngemb::detail::convert<Weight>(value); });
  return converted;
}

/// The largest over rows of max |got - want| / max |want| in the row.
inline double worst_row_error(const std::vector<float>& got, const std::vector<double>& want, std::size_t width) {
  REQUIRE(got.size() == want.size());
  double worst = 0.0;
  for (std::size_t row = 0; row * width < want.size(); ++row) {
    double scale = 0.0;
    double error = 0.0;
    for (std::size_t column = row * width; column < (row + 1) * width; ++column) {
      scale = std::max(scale, std::abs(want[column]));
      error = std::max(error, std::abs(static_cast<double>(got[column]) - want[column]));
    }
    worst = std::max(worst, error / std::max(scale, 1e-30));
  }
  return worst;
}

/// Fields both kinds of case have.
struct ffn_case {
  nlohmann::json golden;
  std::string name;
  std::int64_t hidden;
  std::vector<float> x;
  std::vector<float> gate;
  std::vector<float> up;
  std::vector<float> down;
  std::vector<double> y;

  explicit ffn_case(const nlohmann::json& c)
      : golden(c),
        name(c.at("name")),
        hidden(c.at("hidden")),
        x(c.at("x").get<std::vector<float>>()),
        gate(c.at("gate").get<std::vector<float>>()),
        up(c.at("up").get<std::vector<float>>()),
        down(c.at("down").get<std::vector<float>>()),
        y(c.at("y").get<std::vector<double>>()) {}

  [[nodiscard]] bool bf16_weights() const { return golden.at("weight_dtype") == "bf16"; }
  [[nodiscard]] std::size_t tokens() const { return x.size() / static_cast<std::size_t>(hidden); }

  void check(const std::vector<float>& got) const {
    const double error = worst_row_error(got, y, static_cast<std::size_t>(hidden));
    INFO(name << ": worst row error " << error);
    CHECK(error <= moe_tolerance);
  }
};

struct swiglu_case : ffn_case {
  std::int64_t intermediate;

  explicit swiglu_case(const nlohmann::json& c) : ffn_case(c), intermediate(c.at("intermediate")) {}

  template <class Weight, class Policy>
  [[nodiscard]] ngemb::swiglu<Weight, Policy> make(const Policy& policy) const {
    const auto g = as_weights<Weight>(gate);
    const auto u = as_weights<Weight>(up);
    const auto d = as_weights<Weight>(down);
    return ngemb::swiglu<Weight, Policy>(
        policy, {.hidden = hidden, .intermediate = intermediate},
        {.gate = ngemb::view<const Weight>(g), .up = ngemb::view<const Weight>(u), .down = ngemb::view<const Weight>(d)});
  }
};

struct moe_case : ffn_case, router_parameters {
  std::int64_t expert_width;

  explicit moe_case(const nlohmann::json& c)
      : ffn_case(c), router_parameters(c), expert_width(c.at("expert_width")) {}

  [[nodiscard]] ngemb::moe_shape shape() const {
    return {.hidden = hidden, .expert_width = expert_width, .router = options};
  }

  template <class Router, class Policy>
  [[nodiscard]] Router make_router(const Policy& policy) const {
    return router_for<Router>(policy, hidden);
  }

  template <class Router, class Weight, class Policy>
  [[nodiscard]] ngemb::moe<Router, Weight> make(const Policy& policy) const {
    const auto g = as_weights<Weight>(gate);
    const auto u = as_weights<Weight>(up);
    const auto d = as_weights<Weight>(down);
    return ngemb::moe<Router, Weight>(
        policy, make_router<Router>(policy), shape(),
        {.gate = ngemb::view<const Weight>(g), .up = ngemb::view<const Weight>(u), .down = ngemb::view<const Weight>(d)});
  }

  /// Runs `check(moe)` for the case's scoring, with fp32 weights and, for bf16 cases, bf16 weights too.
  template <class Policy, class Check>
  void for_each_layer(const Policy& policy, Check&& check) const {
    const auto with_router = [&]<class Router>() {
      check(make<Router, float>(policy));
      if (bf16_weights()) {
        check(make<Router, ngemb::bf16>(policy));
      }
    };
    if (softmax()) {
      with_router.template operator()<ngemb::softmax_router<Policy>>();
    } else {
      with_router.template operator()<ngemb::sigmoid_router<Policy>>();
    }
  }

  /// The load statistics count the reference's choices, counted here.
  void check_load(const ngemb::routing_statistics& statistics) const {
    std::vector<std::int64_t> expected(static_cast<std::size_t>(options.num_experts()), 0);
    for (const auto& token : golden.at("chosen")) {
      for (const auto& expert : token) {
        ++expected[expert.get<std::size_t>()];
      }
    }
    INFO(name);
    CHECK(statistics.routed_experts == options.routed_experts);
    CHECK(statistics.load == expected);
  }
};

inline std::vector<swiglu_case> swiglu_cases() {
  std::vector<swiglu_case> cases;
  for (const auto& c : moe_golden().at("swiglu")) {
    cases.emplace_back(c);
  }
  return cases;
}

inline std::vector<moe_case> moe_cases() {
  std::vector<moe_case> cases;
  for (const auto& c : moe_golden().at("moe")) {
    cases.emplace_back(c);
  }
  return cases;
}

}  // namespace ngemb_test
