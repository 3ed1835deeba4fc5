#pragma once
// The MLA cases written by tests/reference/mla_reference.py (transformers' own LongcatFlashMLA, float64) and the
// runs the host (tests/model.cpp) and device (tests/cuda/model.cu) tests check under any policy and cache element.
//
// Tolerances:
//   mla_tolerance = 1e-4 of each output row's largest magnitude against transformers (fp32 layer: GEMMs over at
//     most 48 terms, softmax over at most 11 keys, RoPE angles in double; measured <= 4.4e-7, while a wrong
//     pairing, scaling or position moves outputs by 1e-2 or more).
//   form_tolerance = 1e-5 of the largest |out| between the absorbed and the expanded form (both fp32 over the
//     same cache; they differ only in summation order; measured 2e-7).
//   bf16_tolerance = 1e-2 of each row's largest magnitude for a bf16 latent cache against the reference: bf16
//     keeps 8 significant bits (relative rounding up to 2^-9 = 2e-3 per stored value), and the scores sum over
//     kv_lora_rank + rope such products, so a few times that reaches the output (measured <= 4.5e-3).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "embedding_golden.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/model/latent_cache.hpp"
#include "ngemb/model/mla_attention.hpp"

namespace ngemb_test {

inline constexpr double mla_tolerance = 1e-4;
inline constexpr double form_tolerance = 1e-5;
inline constexpr double bf16_tolerance = 1e-2;

inline std::filesystem::path mla_golden_folder() { return std::filesystem::path(NGEMB_REFERENCE_DIR) / "mla"; }

inline const nlohmann::json& mla_golden() {
  static const nlohmann::json golden = [] {
    std::ifstream file(mla_golden_folder() / "golden.json");
    return nlohmann::json::parse(file);
  }();
  return golden;
}

inline const ngemb::safetensors_checkpoint& mla_checkpoint() {
  static const ngemb::safetensors_checkpoint checkpoint(mla_golden_folder() / "model.safetensors");
  return checkpoint;
}

inline ngemb::rope_scaling rope_of(const nlohmann::json& rope) {
  ngemb::rope_scaling scaling;
  if (rope.at("rope_type") == "yarn") {
    scaling.kind = ngemb::rope_scaling::type::yarn;
    scaling.factor = rope.at("factor");
    scaling.original_max_position_embeddings = rope.at("original_max_position_embeddings");
    scaling.beta_fast = rope.at("beta_fast");
    scaling.beta_slow = rope.at("beta_slow");
    scaling.mscale = rope.at("mscale");
    scaling.mscale_all_dim = rope.at("mscale_all_dim");
  }
  return scaling;
}

struct mla_case {
  std::string name;
  std::string prefix;
  ngemb::mla_shape shape;
  struct step {
    std::vector<std::size_t> sequences;
    std::vector<std::int64_t> sizes;
  };
  std::vector<step> steps;
  std::vector<std::vector<float>> inputs;     ///< per sequence [length x H]
  std::vector<std::vector<double>> expected;  ///< per sequence [length x H]
  std::vector<double> inv_freq;               ///< transformers' rotary inv_freq
  double attention_scaling;                   ///< transformers' factor on cos and sin
  double softmax_scale;                       ///< LongcatFlashMLA.scaling

  [[nodiscard]] std::size_t width() const { return static_cast<std::size_t>(shape.hidden); }
};

inline std::vector<mla_case> mla_cases() {
  std::vector<mla_case> cases;
  for (const auto& c : mla_golden().at("cases")) {
    mla_case& out = cases.emplace_back();
    out.name = c.at("name");
    out.prefix = c.at("prefix");
    out.shape = {.hidden = c.at("hidden"),
                 .heads = c.at("heads"),
                 .q_lora_rank = c.at("q_lora_rank"),
                 .kv_lora_rank = c.at("kv_lora_rank"),
                 .qk_nope_head_dim = c.at("qk_nope_head_dim"),
                 .qk_rope_head_dim = c.at("qk_rope_head_dim"),
                 .v_head_dim = c.at("v_head_dim"),
                 .attention_bias = c.at("attention_bias"),
                 .rope_theta = c.at("rope").at("rope_theta"),
                 .rope = rope_of(c.at("rope"))};
    for (const auto& s : c.at("steps")) {
      out.steps.push_back({s.at("sequences").get<std::vector<std::size_t>>(),
                           s.at("sizes").get<std::vector<std::int64_t>>()});
    }
    out.inputs = c.at("sequences").get<std::vector<std::vector<float>>>();
    out.expected = c.at("expected").get<std::vector<std::vector<double>>>();
    out.inv_freq = c.at("inv_freq").get<std::vector<double>>();
    out.attention_scaling = c.at("attention_scaling");
    out.softmax_scale = c.at("softmax_scale");
  }
  return cases;
}

template <class Policy, class Element = float>
ngemb::mla_attention<Policy, Element> load_mla(const Policy& policy, const mla_case& c) {
  return ngemb::mla_attention<Policy, Element>::load(policy, mla_checkpoint(), c.prefix, c.shape);
}

/// A schedule's cache: 2 attention layers (the layer runs as layer 1), 4 slots of 16 positions, the sequences in
/// slots 3, 0 and 2 (slot 1 freed again) so slot ids differ from sequence indices.
template <class Attention>
struct mla_schedule_cache {
  typename Attention::cache_type cache;
  std::vector<std::int32_t> slot_of = {3, 0, 2};

  mla_schedule_cache(const typename Attention::policy_type& policy, const ngemb::mla_shape& shape)
      : cache(Attention::make_cache(policy, shape, 2, 4, 16)) {
    for (int i = 0; i < 4; ++i) {
      cache.allocate();
    }
    cache.free(1);
  }
};

inline constexpr int mla_schedule_layer = 1;

/// One begin-forward-commit step: sequence sequences[i] gets rows [first[i], first[i] + sizes[i]) of `inputs`.
template <class Attention>
std::vector<float> run_mla_step(const typename Attention::policy_type& policy, Attention& layer,
                                mla_schedule_cache<Attention>& state, const std::vector<std::vector<float>>& inputs,
                                const mla_case::step& step, const std::vector<std::int64_t>& first) {
  const auto width = static_cast<std::size_t>(layer.dimensions().hidden);
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
  layer.forward(policy, state.cache, mla_schedule_layer, device_x.as_view(), out.as_view());
  state.cache.commit();
  return to_host(policy, ngemb::view<const float>(out.as_view()));
}

/// The schedule from empty slots; each sequence's output rows. With `rejected_after` = k, after step k every
/// sequence appends 3 draft tokens, commits them and truncates them away: later steps must not see them.
template <class Attention>
std::vector<std::vector<float>> run_mla_schedule(const typename Attention::policy_type& policy, Attention& layer,
                                                 const std::vector<mla_case::step>& steps,
                                                 const std::vector<std::vector<float>>& inputs,
                                                 int rejected_after = -1) {
  mla_schedule_cache<Attention> state(policy, layer.dimensions());
  const auto width = static_cast<std::size_t>(layer.dimensions().hidden);
  std::vector<std::vector<float>> outputs(inputs.size());
  std::vector<std::int64_t> done(inputs.size(), 0);
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const mla_case::step& step = steps[k];
    std::vector<std::int64_t> first;
    for (const std::size_t sequence : step.sequences) {
      first.push_back(done[sequence]);
    }
    const std::vector<float> out = run_mla_step(policy, layer, state, inputs, step, first);
    std::size_t row = 0;
    for (std::size_t i = 0; i < step.sequences.size(); ++i) {
      const std::size_t sequence = step.sequences[i];
      const auto rows_end = row + static_cast<std::size_t>(step.sizes[i]);
      outputs[sequence].insert(outputs[sequence].end(), out.begin() + static_cast<std::ptrdiff_t>(row * width),
                               out.begin() + static_cast<std::ptrdiff_t>(rows_end * width));
      row = rows_end;
      done[sequence] += step.sizes[i];
      CHECK(state.cache.length(state.slot_of[sequence]) == done[sequence]);
    }
    if (static_cast<int>(k) == rejected_after) {
      std::vector<std::vector<float>> drafts;
      mla_case::step speculative;
      for (std::size_t sequence = 0; sequence < inputs.size(); ++sequence) {
        drafts.emplace_back(inputs[sequence].rbegin(), inputs[sequence].rbegin() + static_cast<std::ptrdiff_t>(3 * width));
        speculative.sequences.push_back(sequence);
        speculative.sizes.push_back(3);
      }
      run_mla_step(policy, layer, state, drafts, speculative, std::vector<std::int64_t>(inputs.size(), 0));
      for (std::size_t sequence = 0; sequence < done.size(); ++sequence) {
        CHECK(state.cache.length(state.slot_of[sequence]) == done[sequence] + 3);
        state.cache.truncate(state.slot_of[sequence], done[sequence]);
      }
    }
  }
  return outputs;
}

inline void check_mla_against_reference(const mla_case& c, const std::vector<std::vector<float>>& outputs,
                                        double tolerance = mla_tolerance) {
  for (std::size_t sequence = 0; sequence < c.expected.size(); ++sequence) {
    REQUIRE(outputs[sequence].size() == c.expected[sequence].size());
    const double error = worst_row_error(outputs[sequence], c.expected[sequence], c.width());
    INFO(c.name << " sequence " << sequence << ": error " << error);
    CHECK(error <= tolerance);
  }
}

/// Largest |a - b| over the largest |a|, over all sequences.
inline double relative_difference(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  double scale = 0.0;
  double difference = 0.0;
  REQUIRE(a.size() == b.size());
  for (std::size_t s = 0; s < a.size(); ++s) {
    REQUIRE(a[s].size() == b[s].size());
    for (std::size_t i = 0; i < a[s].size(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(a[s][i])));
      difference = std::max(difference, std::abs(static_cast<double>(a[s][i]) - b[s][i]));
    }
  }
  return difference / scale;
}

/// Random host weights for `shape` (uniform, scaled by 1/sqrt(fan-in); norm weights around 1).
struct random_mla_weights {
  std::vector<std::vector<float>> storage;
  ngemb::mla_weights views{};

  random_mla_weights(const ngemb::mla_shape& shape, unsigned seed) {
    std::mt19937 engine(seed);
    storage.reserve(11);
    const auto make = [&](ngemb::view<const float>& target, std::size_t rows, std::size_t columns, bool norm) {
      std::uniform_real_distribution<float> value(-1.0f, 1.0f);
      std::vector<float>& values = storage.emplace_back(rows * columns);
      for (float& v : values) {
        v = norm ? 1.0f + 0.5f * value(engine) : value(engine) / std::sqrt(static_cast<float>(columns));
      }
      target = ngemb::view<const float>(values);
    };
    const auto hidden = static_cast<std::size_t>(shape.hidden);
    const auto heads = static_cast<std::size_t>(shape.heads);
    const auto rank = static_cast<std::size_t>(shape.q_lora_rank);
    const auto latent = static_cast<std::size_t>(shape.kv_lora_rank);
    const auto rope = static_cast<std::size_t>(shape.qk_rope_head_dim);
    const std::size_t query = heads * static_cast<std::size_t>(shape.qk_head_dim());
    if (rank > 0) {
      make(views.q_a_proj, rank, hidden, false);
      make(views.q_a_layernorm, 1, rank, true);
      make(views.q_b_proj, query, rank, false);
      if (shape.attention_bias) {
        make(views.q_a_proj_bias, 1, rank, false);
      }
    } else {
      make(views.q_proj, query, hidden, false);
    }
    make(views.kv_a_proj_with_mqa, latent + rope, hidden, false);
    make(views.kv_a_layernorm, 1, latent, true);
    make(views.kv_b_proj, heads * static_cast<std::size_t>(shape.qk_nope_head_dim + shape.v_head_dim), latent, false);
    make(views.o_proj, hidden, heads * static_cast<std::size_t>(shape.v_head_dim), false);
    if (shape.attention_bias) {
      make(views.kv_a_proj_with_mqa_bias, 1, latent + rope, false);
      make(views.o_proj_bias, 1, hidden, false);
    }
  }
};

/// Random inputs for `lengths` sequences of width `hidden`.
inline std::vector<std::vector<float>> random_inputs(const std::vector<std::int64_t>& lengths, std::int64_t hidden,
                                                     unsigned seed) {
  std::mt19937 engine(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<std::vector<float>> inputs;
  for (const std::int64_t length : lengths) {
    std::vector<float>& rows = inputs.emplace_back(static_cast<std::size_t>(length * hidden));
    for (float& v : rows) {
      v = value(engine);
    }
  }
  return inputs;
}

/// A wider random shape with YaRN and biases, and a ragged schedule whose steps mix a prefill, a chunked prefill
/// and decodes: sequence 0 prefills 6, sequence 1 prefills 4; then 0 decodes while 1 continues with a chunk of 3
/// and 2 starts a prompt of 5; then all three decode; then 2 takes a chunk of 2 while 0 decodes.
inline ngemb::mla_shape random_form_shape(int q_lora_rank) {
  ngemb::rope_scaling yarn;
  yarn.kind = ngemb::rope_scaling::type::yarn;
  yarn.factor = 8.0;
  yarn.original_max_position_embeddings = 32;
  yarn.mscale = 1.0;
  yarn.mscale_all_dim = 1.0;
  return {.hidden = 48, .heads = 3, .q_lora_rank = q_lora_rank, .kv_lora_rank = 40, .qk_nope_head_dim = 12,
          .qk_rope_head_dim = 10, .v_head_dim = 14, .attention_bias = true, .rope_theta = 10000.0, .rope = yarn};
}

inline std::vector<mla_case::step> mixed_steps() {
  return {{{0, 1}, {6, 4}}, {{0, 1, 2}, {1, 3, 5}}, {{2, 0, 1}, {1, 1, 1}}, {{2, 0}, {2, 1}}};
}

inline std::vector<std::int64_t> mixed_lengths() { return {9, 8, 8}; }

}  // namespace ngemb_test
