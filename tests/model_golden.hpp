#pragma once
// The whole-model reference of tests/reference/model_reference.py (PyTorch, float64) and the checks every policy
// runs against it: tests/causal_lm.cpp on the host, tests/cuda/causal_lm.cu on a device.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "embedding_golden.hpp"
#include "ngemb/model/causal_lm.hpp"
#include "ngemb/model/generate.hpp"

namespace ngemb_test {

inline const std::filesystem::path model_dir = std::filesystem::path(NGEMB_REFERENCE_DIR) / "model";

struct model_golden {
  std::vector<std::vector<std::int32_t>> sequences;
  std::vector<std::vector<double>> logits;  // every token, batch order
  int max_new_tokens = 0;
  std::vector<std::vector<std::int32_t>> greedy;

  explicit model_golden(const std::string& name) {
    std::ifstream stream(model_dir / name / "expected.json");
    const nlohmann::json root = nlohmann::json::parse(stream);
    sequences = root.at("sequences").get<std::vector<std::vector<std::int32_t>>>();
    logits = root.at("logits").get<std::vector<std::vector<double>>>();
    max_new_tokens = root.at("max_new_tokens").get<int>();
    greedy = root.at("greedy").get<std::vector<std::vector<std::int32_t>>>();
  }

  [[nodiscard]] std::vector<std::int32_t> flat() const {
    std::vector<std::int32_t> tokens;
    for (const auto& sequence : sequences) {
      tokens.insert(tokens.end(), sequence.begin(), sequence.end());
    }
    return tokens;
  }
  [[nodiscard]] std::vector<std::int64_t> offsets() const {
    std::vector<std::int64_t> result{0};
    for (const auto& sequence : sequences) {
      result.push_back(result.back() + static_cast<std::int64_t>(sequence.size()));
    }
    return result;
  }
};

/// fp32 through ~20 chained sublayers against float64: 1e-4 relative to max(|expected|, 1) leaves a 10x margin
/// over the worst error seen, and is far below what a wrong routing choice or position (~1e-1) would cause.
inline void check_row(const float* actual, const std::vector<double>& expected, const std::string& where) {
  for (std::size_t id = 0; id < expected.size(); ++id) {
    const double tolerance = 1e-4 * std::max(1.0, std::abs(expected[id]));
    if (!(std::abs(actual[id] - expected[id]) <= tolerance)) {
      FAIL(where << ", token id " << id << ": got " << actual[id] << ", expected " << expected[id]);
    }
  }
}

/// Feeds a ragged batch to the model's sequences `ids`; the logits come back to the host.
template <class Model, class Policy>
std::vector<float> run_batch(Model& model, const Policy& policy, const std::vector<std::vector<std::int32_t>>& sequences,
                             const std::vector<typename Model::sequence_id>& ids, ngemb::logits_for which) {
  std::vector<std::int32_t> tokens;
  std::vector<std::int64_t> offsets{0};
  for (const auto& sequence : sequences) {
    tokens.insert(tokens.end(), sequence.begin(), sequence.end());
    offsets.push_back(static_cast<std::int64_t>(tokens.size()));
  }
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size());
  typename Policy::template buffer<float> logits(
      policy, (which == ngemb::logits_for::every_token ? tokens.size() : sequences.size()) * vocab);
  model.forward(policy, ngemb::view<const std::int32_t>(ids),
                ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(tokens),
                                                       ngemb::view<const std::int64_t>(offsets)),
                logits.as_view(), {.logits = which});
  return to_host(policy, ngemb::view<const float>(logits.as_view()));
}

template <class Model>
std::vector<typename Model::sequence_id> start(Model& model, std::size_t count) {
  std::vector<typename Model::sequence_id> ids;
  for (std::size_t i = 0; i < count; ++i) {
    ids.push_back(model.start_sequence());
  }
  return ids;
}

/// The reference model `name` loaded as `Model` under `policy`: every token's logits of a ragged prefill, the same
/// logits through the caches (half of each sequence as a prefill, then one token per step), greedy generation.
template <class Model, class Policy>
void check_against_reference(const Policy& policy, const std::string& name) {
  const model_golden expected(name);
  auto model = Model::load(policy, model_dir / name);
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size());

  SUBCASE("a ragged prefill gives every token's logits") {
    const auto ids = start(model, expected.sequences.size());
    const auto logits = run_batch(model, policy, expected.sequences, ids, ngemb::logits_for::every_token);
    for (std::size_t row = 0; row < expected.logits.size(); ++row) {
      check_row(logits.data() + row * vocab, expected.logits[row], name + " prefill row " + std::to_string(row));
    }
    for (std::size_t b = 0; b < ids.size(); ++b) {
      CHECK(model.length(ids[b]) == static_cast<std::int64_t>(expected.sequences[b].size()));
    }
  }

  SUBCASE("chunked prefill then one-token decode steps read the caches") {
    // Every sequence's first half as one ragged prefill, then the rest one token per step for the sequences
    // that still have tokens: each step's last-token logits must equal the reference rows.
    const auto ids = start(model, expected.sequences.size());
    std::vector<std::size_t> fed(expected.sequences.size());
    std::vector<std::vector<std::int32_t>> chunk;
    for (std::size_t b = 0; b < expected.sequences.size(); ++b) {
      fed[b] = (expected.sequences[b].size() + 1) / 2;
      chunk.emplace_back(expected.sequences[b].begin(), expected.sequences[b].begin() + static_cast<long>(fed[b]));
    }
    const auto offsets = expected.offsets();
    auto logits = run_batch(model, policy, chunk, ids, ngemb::logits_for::last_token);
    for (std::size_t b = 0; b < ids.size(); ++b) {
      check_row(logits.data() + b * vocab, expected.logits[static_cast<std::size_t>(offsets[b]) + fed[b] - 1],
                name + " chunk of sequence " + std::to_string(b));
    }
    for (bool more = true; more;) {
      more = false;
      std::vector<std::vector<std::int32_t>> step;
      std::vector<std::int32_t> step_ids;
      std::vector<std::size_t> members;
      for (std::size_t b = 0; b < ids.size(); ++b) {
        if (fed[b] < expected.sequences[b].size()) {
          step.push_back({expected.sequences[b][fed[b]++]});
          step_ids.push_back(ids[b]);
          members.push_back(b);
        }
      }
      if (step.empty()) {
        break;
      }
      more = true;
      logits = run_batch(model, policy, step, step_ids, ngemb::logits_for::last_token);
      for (std::size_t i = 0; i < members.size(); ++i) {
        const std::size_t b = members[i];
        check_row(logits.data() + i * vocab, expected.logits[static_cast<std::size_t>(offsets[b]) + fed[b] - 1],
                  name + " decode of sequence " + std::to_string(b) + " at " + std::to_string(fed[b] - 1));
      }
    }
  }

  SUBCASE("greedy generation gives the reference's tokens") {
    ngemb::generation_options options;
    options.max_new_tokens = expected.max_new_tokens;
    int progress_calls = 0;
    const auto result = ngemb::generate(policy, model, expected.sequences, options,
                                        [&](const ngemb::generation_progress& progress) {
                                          CHECK(progress.step == progress_calls++);
                                        });
    CHECK(result.tokens == expected.greedy);
    CHECK(progress_calls == expected.max_new_tokens);
    CHECK(result.prefill_tokens == expected.flat().size());
    CHECK(result.decode_tokens == expected.sequences.size() * static_cast<std::size_t>(expected.max_new_tokens - 1));
  }
}

}  // namespace ngemb_test
