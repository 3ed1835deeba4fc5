#pragma once
// The shipped model (models/tiny-longcat, trained by tools/train/train_tiny.py) against what PyTorch computed from
// the same bf16 weights in float64 (tests/reference/tiny_longcat/: expected.json, logits.safetensors): every
// prompt token's logits and the greedy continuation of each prompt. Run on the host by tests/presets.cpp and on a
// device by tests/cuda/presets.cu.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model_golden.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/model/generate.hpp"

namespace ngemb_test {

inline const std::filesystem::path tiny_longcat_model = std::filesystem::path(NGEMB_MODELS_DIR) / "tiny-longcat";
inline const std::filesystem::path tiny_longcat_goldens =
    std::filesystem::path(NGEMB_REFERENCE_DIR) / "tiny_longcat";

/// bf16 weights widened exactly, fp32 compute against float64 compute: logits within 1e-3 (they reach ~20 here;
/// an expert routed differently or a wrong n-gram id moves them by far more).
inline constexpr double tiny_longcat_logit_tolerance = 1e-3;

struct tiny_longcat_golden {
  struct prompt_case {
    std::string source;  // the validation file the prompt starts
    std::vector<std::int32_t> prompt;
    std::vector<std::int32_t> greedy;
    std::vector<float> logits;  // [prompt tokens x V]
  };
  std::vector<prompt_case> cases;

  tiny_longcat_golden() {
    std::ifstream stream(tiny_longcat_goldens / "expected.json");
    const nlohmann::json root = nlohmann::json::parse(stream);
    const ngemb::safetensors_checkpoint logits(tiny_longcat_goldens / "logits.safetensors");
    for (const auto& entry : root.at("cases")) {
      prompt_case c{entry.at("source").get<std::string>(), entry.at("prompt").get<std::vector<std::int32_t>>(),
                    entry.at("greedy").get<std::vector<std::int32_t>>(), {}};
      const std::string name = "logits." + std::to_string(cases.size());
      c.logits = ngemb::read_tensor_as<float>(logits, name, logits.info(name).shape);
      cases.push_back(std::move(c));
    }
  }
};

/// The shipped checkpoint loaded as `Model`: a ragged prefill of every golden prompt gives PyTorch's logits for
/// every token, and greedy generation continues each prompt byte for byte as PyTorch did.
template <class Model, class Policy>
void check_tiny_longcat(const Policy& policy) {
  const tiny_longcat_golden expected;
  REQUIRE(expected.cases.size() == 4);  // the README prompt, then three validation prompts
  auto model = Model::load(policy, tiny_longcat_model);
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size());
  std::vector<std::vector<std::int32_t>> prompts;
  for (const auto& c : expected.cases) {
    REQUIRE(c.logits.size() == c.prompt.size() * vocab);
    prompts.push_back(c.prompt);
  }

  SUBCASE("every prompt token's logits") {
    const auto ids = start(model, prompts.size());
    const auto logits = run_batch(model, policy, prompts, ids, ngemb::logits_for::every_token);
    std::size_t row = 0;
    for (const auto& c : expected.cases) {
      for (std::size_t t = 0; t < c.prompt.size(); ++t, ++row) {
        double worst = 0.0;
        for (std::size_t id = 0; id < vocab; ++id) {
          worst = std::max(worst, std::abs(double{logits[row * vocab + id]} - double{c.logits[t * vocab + id]}));
        }
        INFO(c.source << ", position " << t);
        CHECK(worst <= tiny_longcat_logit_tolerance);
      }
    }
  }

  SUBCASE("greedy continuation, byte for byte") {
    const ngemb::generation_options options{.max_new_tokens = static_cast<int>(expected.cases.front().greedy.size())};
    const auto result = ngemb::generate(policy, model, prompts, options);
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      INFO(expected.cases[p].source);
      CHECK(result.tokens[p] == expected.cases[p].greedy);
    }
  }
}

}  // namespace ngemb_test
