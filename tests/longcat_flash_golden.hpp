#pragma once
// The goldens transformers computed for tiny LongcatFlashForCausalLM checkpoints (tests/reference/
// longcat_flash_reference.py: MLA, YaRN, zero experts, the n-gram embedding) and the checks every policy runs
// against them: tests/presets.cpp on the host, tests/cuda/presets.cu on a device. The folders are what
// save_pretrained wrote; ngemb loads them unchanged.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model_golden.hpp"
#include "ngemb/model/generate.hpp"

namespace ngemb_test {

inline const std::filesystem::path longcat_flash_dir = std::filesystem::path(NGEMB_REFERENCE_DIR) / "longcat_flash";

/// The cases of longcat_flash_reference.py by embedding: the plain ones load as presets::longcat_flash, the
/// n-gram ones (model_type "longcat_flash_ngram") as presets::longcat_flash_lite.
inline const std::vector<std::string> plain_longcat_cases{"plain", "q_proj", "yarn", "yarn_rope_scaling",
                                                          "attention_bias"};
inline const std::vector<std::string> ngram_longcat_cases{"ngram_n3k2", "ngram_n4k3"};

struct longcat_flash_golden {
  std::vector<std::vector<std::int32_t>> sequences;       // ragged prompts, each from position 0
  std::vector<std::vector<double>> logits;                // every prompt token, batch order
  std::vector<std::vector<std::int64_t>> chunks;          // chunk sizes of each prompt's chunked prefill
  std::vector<std::vector<std::int32_t>> decode_tokens;   // fed one per step after each whole prompt
  std::vector<std::vector<double>> decode_logits;         // sequence-major: sequence 0's steps, then 1's, ...
  int max_new_tokens = 0;
  std::vector<std::vector<std::int32_t>> greedy;

  explicit longcat_flash_golden(const std::string& name) {
    std::ifstream stream(longcat_flash_dir / name / "expected.json");
    const nlohmann::json root = nlohmann::json::parse(stream);
    sequences = root.at("sequences").get<std::vector<std::vector<std::int32_t>>>();
    logits = root.at("logits").get<std::vector<std::vector<double>>>();
    chunks = root.at("chunks").get<std::vector<std::vector<std::int64_t>>>();
    decode_tokens = root.at("decode_tokens").get<std::vector<std::vector<std::int32_t>>>();
    decode_logits = root.at("decode_logits").get<std::vector<std::vector<double>>>();
    max_new_tokens = root.at("max_new_tokens").get<int>();
    greedy = root.at("greedy").get<std::vector<std::vector<std::int32_t>>>();
  }

  /// Where sequence b's rows start in `logits`.
  [[nodiscard]] std::size_t first_row(std::size_t b) const {
    std::size_t row = 0;
    for (std::size_t i = 0; i < b; ++i) {
      row += sequences[i].size();
    }
    return row;
  }
};

/// fp32 against fp32 transformers: within 1e-4 of the row's largest |logit| (the goldens' rows reach ~5; one
/// token routed to another expert or a wrong RoPE position moves logits by ~1e-1).
inline void check_logits_row(const float* actual, const std::vector<double>& expected, const std::string& where) {
  double largest = 0.0;
  for (const double value : expected) {
    largest = std::max(largest, std::abs(value));
  }
  const double tolerance = 1e-4 * largest;
  for (std::size_t id = 0; id < expected.size(); ++id) {
    if (!(std::abs(actual[id] - expected[id]) <= tolerance)) {
      FAIL(where << ", token id " << id << ": got " << actual[id] << ", expected " << expected[id]
                 << " (tolerance " << tolerance << ")");
    }
  }
}

/// The transformers golden `name` loaded as `Model` under `policy`: every token's logits through a one-shot ragged
/// prefill and through a chunked prefill, decode steps after the whole prompts, greedy generation token for token.
template <class Model, class Policy>
void check_against_transformers(const Policy& policy, const std::string& name) {
  const longcat_flash_golden expected(name);
  auto model = Model::load(policy, longcat_flash_dir / name);
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size());
  const std::size_t count = expected.sequences.size();

  SUBCASE("a one-shot ragged prefill gives every token's logits") {
    const auto ids = start(model, count);
    const auto logits = run_batch(model, policy, expected.sequences, ids, ngemb::logits_for::every_token);
    REQUIRE(logits.size() == expected.logits.size() * vocab);
    for (std::size_t row = 0; row < expected.logits.size(); ++row) {
      check_logits_row(logits.data() + row * vocab, expected.logits[row], name + " prefill row " + std::to_string(row));
    }
    for (std::size_t b = 0; b < count; ++b) {
      CHECK(model.length(ids[b]) == static_cast<std::int64_t>(expected.sequences[b].size()));
    }
  }

  SUBCASE("a chunked prefill gives the same rows through the latent cache") {
    // Step c feeds chunk c of every sequence that has one, as one ragged batch.
    const auto ids = start(model, count);
    std::vector<std::size_t> fed(count);
    for (std::size_t c = 0;; ++c) {
      std::vector<std::vector<std::int32_t>> step;
      std::vector<typename Model::sequence_id> step_ids;
      std::vector<std::size_t> members;
      for (std::size_t b = 0; b < count; ++b) {
        if (c < expected.chunks[b].size()) {
          const auto begin = expected.sequences[b].begin() + static_cast<std::ptrdiff_t>(fed[b]);
          step.emplace_back(begin, begin + expected.chunks[b][c]);
          step_ids.push_back(ids[b]);
          members.push_back(b);
        }
      }
      if (step.empty()) {
        break;
      }
      const auto logits = run_batch(model, policy, step, step_ids, ngemb::logits_for::every_token);
      std::size_t row = 0;
      for (std::size_t i = 0; i < members.size(); ++i) {
        const std::size_t b = members[i];
        for (std::size_t t = 0; t < step[i].size(); ++t, ++row) {
          check_logits_row(logits.data() + row * vocab, expected.logits[expected.first_row(b) + fed[b] + t],
                           name + " chunk " + std::to_string(c) + " of sequence " + std::to_string(b) +
                               ", position " + std::to_string(fed[b] + t));
        }
        fed[b] += step[i].size();
      }
    }
    for (std::size_t b = 0; b < count; ++b) {
      CHECK(fed[b] == expected.sequences[b].size());
      CHECK(model.length(ids[b]) == static_cast<std::int64_t>(expected.sequences[b].size()));
    }
  }

  SUBCASE("decode steps after the prompts read the latent cache") {
    const auto ids = start(model, count);
    static_cast<void>(run_batch(model, policy, expected.sequences, ids, ngemb::logits_for::last_token));
    const std::size_t steps = expected.decode_tokens.front().size();
    for (std::size_t s = 0; s < steps; ++s) {
      std::vector<std::vector<std::int32_t>> step;
      for (std::size_t b = 0; b < count; ++b) {
        step.push_back({expected.decode_tokens[b][s]});
      }
      const auto logits = run_batch(model, policy, step, ids, ngemb::logits_for::last_token);
      for (std::size_t b = 0; b < count; ++b) {
        check_logits_row(logits.data() + b * vocab, expected.decode_logits[b * steps + s],
                         name + " decode step " + std::to_string(s) + " of sequence " + std::to_string(b));
      }
    }
  }

  SUBCASE("greedy generation gives transformers' tokens") {
    ngemb::generation_options options;
    options.max_new_tokens = expected.max_new_tokens;
    const auto result = ngemb::generate(policy, model, expected.sequences, options);
    CHECK(result.tokens == expected.greedy);
    for (std::size_t b = 0; b < count; ++b) {  // one sequence at a time: the batch does not change its tokens
      CHECK(ngemb::generate(policy, model, {expected.sequences[b]}, options).tokens.front() == expected.greedy[b]);
    }
  }
}

}  // namespace ngemb_test
