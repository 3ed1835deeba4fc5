#pragma once
// The model-layer cases written by tests/reference/attention_reference.py (fp64 PyTorch) and the runs both the host
// (tests/model.cpp) and device (tests/cuda/model.cu) tests check, under any policy.
//
// Tolerance: 1e-4 of each output row's largest magnitude (worst_row_error). The layers run in fp32: GEMMs over at
// most 96 terms, attention scores over head_dim terms, an online softmax over at most 9 keys, RoPE angles in double;
// their rounding stays below 1e-6 of the row scale (4e-7 measured), while a logic error (a wrong position or kv
// head, a missing or extra key, a stale cache entry) moves outputs by 1e-2 or more.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "embedding_golden.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/model/attention.hpp"
#include "ngemb/model/kv_cache.hpp"
#include "ngemb/model/lm_head.hpp"
#include "ngemb/model/rms_norm.hpp"

namespace ngemb_test {

inline constexpr double model_tolerance = 1e-4;

inline std::filesystem::path attention_golden_folder() {
  return std::filesystem::path(NGEMB_REFERENCE_DIR) / "attention";
}

inline const nlohmann::json& attention_golden() {
  static const nlohmann::json golden = [] {
    std::ifstream file(attention_golden_folder() / "golden.json");
    return nlohmann::json::parse(file);
  }();
  return golden;
}

inline const ngemb::safetensors_checkpoint& attention_checkpoint() {
  static const ngemb::safetensors_checkpoint checkpoint(attention_golden_folder() / "model.safetensors");
  return checkpoint;
}

struct attention_case {
  std::string name;
  std::string prefix;
  std::int64_t hidden;
  int heads;
  int kv_heads;
  int head_dim;
  double rope_theta;
  struct step {
    std::vector<std::size_t> sequences;
    std::vector<std::int64_t> sizes;
  };
  std::vector<step> steps;
  std::vector<std::vector<float>> inputs;     ///< per sequence [length x H]
  std::vector<std::vector<double>> expected;  ///< per sequence [length x H]: full causal attention from scratch

  template <class Policy>
  [[nodiscard]] typename ngemb::attention<Policy>::shape shape() const {
    return {hidden, heads, kv_heads, head_dim, rope_theta};
  }
  [[nodiscard]] std::size_t width() const { return static_cast<std::size_t>(hidden); }
};

inline std::vector<attention_case> attention_cases() {
  std::vector<attention_case> cases;
  for (const auto& c : attention_golden().at("attention")) {
    attention_case& out = cases.emplace_back();
    out.name = c.at("name");
    out.prefix = c.at("prefix");
    out.hidden = c.at("hidden");
    out.heads = c.at("heads");
    out.kv_heads = c.at("kv_heads");
    out.head_dim = c.at("head_dim");
    out.rope_theta = c.at("rope_theta");
    for (const auto& s : c.at("steps")) {
      out.steps.push_back({s.at("sequences").get<std::vector<std::size_t>>(),
                           s.at("sizes").get<std::vector<std::int64_t>>()});
    }
    out.inputs = c.at("sequences").get<std::vector<std::vector<float>>>();
    out.expected = c.at("expected").get<std::vector<std::vector<double>>>();
  }
  return cases;
}

/// The cache every schedule runs in: 2 attention layers (the case uses layer 1), 4 slots of 10 positions, and the
/// three sequences in slots 3, 0 and 2 (slot 1 freed again), so slot ids differ from sequence indices.
template <class Policy>
struct schedule_cache {
  ngemb::kv_cache<Policy> cache;
  std::vector<std::int32_t> slot_of;

  schedule_cache(const Policy& policy, const attention_case& c) : cache(policy, 2, c.kv_heads, c.head_dim, 4, 10) {
    for (int i = 0; i < 4; ++i) {
      cache.allocate();
    }
    cache.free(1);
    slot_of = {3, 0, 2};
  }
};

inline constexpr int schedule_layer = 1;

/// Runs one begun-forward-commit step: sequence order[i] gets rows [first[i], first[i] + sizes[i]) of `inputs`;
/// returns the output rows in step order.
template <class Policy>
std::vector<float> run_step(const Policy& policy, ngemb::attention<Policy>& layer, schedule_cache<Policy>& state,
                            const std::vector<std::vector<float>>& inputs, const attention_case::step& step,
                            const std::vector<std::int64_t>& first) {
  const std::size_t width = static_cast<std::size_t>(layer.dimensions().hidden);
  std::vector<std::int32_t> slots;
  std::vector<float> x;
  for (std::size_t i = 0; i < step.sequences.size(); ++i) {
    const std::size_t sequence = step.sequences[i];
    slots.push_back(state.slot_of[sequence]);
    const auto row = [&](std::int64_t index) {
      return inputs[sequence].begin() + static_cast<std::ptrdiff_t>(index * static_cast<std::int64_t>(width));
    };
    x.insert(x.end(), row(first[i]), row(first[i] + step.sizes[i]));
  }
  state.cache.begin(policy, ngemb::view<const std::int32_t>(slots), ngemb::view<const std::int64_t>(step.sizes));
  REQUIRE(state.cache.step_tokens() * width == x.size());
  const auto device_x = to_policy(policy, x);
  auto out = to_policy(policy, std::vector<float>(x.size(), -7.0f));
  layer.forward(policy, state.cache, schedule_layer, device_x.as_view(), out.as_view());
  state.cache.commit();
  return to_host(policy, ngemb::view<const float>(out.as_view()));
}

/// The case's schedule from empty slots; returns each sequence's output rows. With `rejected_after` = k, after
/// step k a speculative step appends 3 unrelated tokens to every sequence, commits them, and truncates them away
/// again: the later steps must then compute exactly what they compute without it.
template <class Policy>
std::vector<std::vector<float>> run_schedule(const Policy& policy, ngemb::attention<Policy>& layer,
                                             const attention_case& c, int rejected_after = -1) {
  schedule_cache<Policy> state(policy, c);
  std::vector<std::vector<float>> outputs(c.inputs.size());
  std::vector<std::int64_t> done(c.inputs.size(), 0);
  for (std::size_t k = 0; k < c.steps.size(); ++k) {
    const attention_case::step& step = c.steps[k];
    std::vector<std::int64_t> first;
    for (const std::size_t sequence : step.sequences) {
      first.push_back(done[sequence]);
    }
    const std::vector<float> out = run_step(policy, layer, state, c.inputs, step, first);
    std::size_t row = 0;
    for (std::size_t i = 0; i < step.sequences.size(); ++i) {
      const std::size_t sequence = step.sequences[i];
      const auto rows_end = row + static_cast<std::size_t>(step.sizes[i]);
      outputs[sequence].insert(outputs[sequence].end(), out.begin() + static_cast<std::ptrdiff_t>(row * c.width()),
                               out.begin() + static_cast<std::ptrdiff_t>(rows_end * c.width()));
      row = rows_end;
      done[sequence] += step.sizes[i];
      CHECK(state.cache.length(state.slot_of[sequence]) == done[sequence]);
    }
    if (static_cast<int>(k) == rejected_after) {
      // Draft rows: each sequence's last values in reverse order, plausible inputs whose keys must not survive.
      std::vector<std::vector<float>> drafts;
      for (const auto& input : c.inputs) {
        drafts.emplace_back(input.rbegin(), input.rbegin() + static_cast<std::ptrdiff_t>(3 * c.width()));
      }
      const attention_case::step speculative{{0, 1, 2}, {3, 3, 3}};
      run_step(policy, layer, state, drafts, speculative, {0, 0, 0});
      for (std::size_t sequence = 0; sequence < done.size(); ++sequence) {
        CHECK(state.cache.length(state.slot_of[sequence]) == done[sequence] + 3);
        state.cache.truncate(state.slot_of[sequence], done[sequence]);
      }
    }
  }
  return outputs;
}

inline void check_against_reference(const attention_case& c, const std::vector<std::vector<float>>& outputs) {
  for (std::size_t sequence = 0; sequence < c.expected.size(); ++sequence) {
    REQUIRE(outputs[sequence].size() == c.expected[sequence].size());
    const double error = worst_row_error(outputs[sequence], c.expected[sequence], c.width());
    INFO(c.name << " sequence " << sequence << ": error " << error);
    CHECK(error <= model_tolerance);
  }
}

/// RMSNorm out of place and in place (y aliasing x) against the reference.
template <class Policy>
void check_rms_norm(const Policy& policy) {
  const nlohmann::json& c = attention_golden().at("rms_norm");
  const auto weight = c.at("weight").get<std::vector<float>>();
  const auto x = c.at("x").get<std::vector<float>>();
  const auto expected = c.at("expected").get<std::vector<double>>();
  const auto hidden = static_cast<std::size_t>(c.at("hidden").get<std::int64_t>());
  const ngemb::rms_norm<Policy> norm(policy, ngemb::view<const float>(weight), c.at("eps").get<float>());
  CHECK(norm.hidden() == static_cast<std::int64_t>(hidden));
  const std::size_t tokens = x.size() / hidden;
  auto input = to_policy(policy, x);
  auto output = to_policy(policy, std::vector<float>(x.size(), -7.0f));
  norm.forward(policy, tokens, input.as_view(), output.as_view());
  const double error = worst_row_error(to_host(policy, ngemb::view<const float>(output.as_view())), expected, hidden);
  INFO("rms_norm error " << error);
  CHECK(error <= model_tolerance);
  norm.forward(policy, tokens, input.as_view(), input.as_view());
  CHECK(to_host(policy, ngemb::view<const float>(input.as_view())) ==
        to_host(policy, ngemb::view<const float>(output.as_view())));
}

/// The LM head loaded from the golden checkpoint against the reference logits.
template <class Policy>
void check_lm_head(const Policy& policy) {
  const nlohmann::json& c = attention_golden().at("lm_head");
  const std::int64_t vocab = c.at("vocab");
  auto head = ngemb::lm_head<Policy>::load(policy, attention_checkpoint(), "",
                                           {.hidden = c.at("hidden"), .vocab_size = vocab, .eps = c.at("eps")});
  CHECK(head.vocab_size() == vocab);
  const auto x = c.at("x").get<std::vector<float>>();
  const std::size_t tokens = x.size() / static_cast<std::size_t>(head.hidden());
  const auto input = to_policy(policy, x);
  auto logits = to_policy(policy, std::vector<float>(tokens * static_cast<std::size_t>(vocab), -7.0f));
  head.forward(policy, tokens, input.as_view(), logits.as_view());
  const double error = worst_row_error(to_host(policy, ngemb::view<const float>(logits.as_view())),
                                       c.at("expected").get<std::vector<double>>(), static_cast<std::size_t>(vocab));
  INFO("lm_head error " << error);
  CHECK(error <= model_tolerance);
}

}  // namespace ngemb_test
