// model/: RMSNorm, RoPE attention with a KV cache over ragged prefill/decode/chunked steps and the LM head against
// the fp64 PyTorch reference (tests/reference/attention_reference.py, tolerances in attention_golden.hpp);
// speculative rollback, checkpoint round trips, the KV cache's slot bookkeeping, and the errors. MLA (issue 11) and
// its latent cache against transformers' LongcatFlashMLA (tests/reference/mla_reference.py, mla_golden.hpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention_golden.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/attention.hpp"
#include "ngemb/model/detail/lane_math.hpp"
#include "ngemb/model/kv_cache.hpp"
#include "ngemb/model/lm_head.hpp"
#include "ngemb/model/rms_norm.hpp"
#include "ngemb/model/rotary.hpp"
#include "ngemb/presets/longcat.hpp"

namespace {

const ngemb::host_policy policy{2, 64};

using ngemb::view;

/// A fresh folder under the system temporary directory, removed with its content at scope exit.
class temporary_folder {
 public:
  explicit temporary_folder(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("ngemb_model_" + name + std::to_string(std::random_device{}()))) {
    std::filesystem::create_directories(path_);
  }
  ~temporary_folder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  temporary_folder(const temporary_folder&) = delete;
  temporary_folder& operator=(const temporary_folder&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

ngemb::attention<> load_case(const ngemb_test::attention_case& c) {
  return ngemb::attention<>::load(policy, ngemb_test::attention_checkpoint(), c.prefix, c.shape<ngemb::host_policy>());
}

// The part kinds' concepts hold for ngemb's own parts (their failures are tests/compile_fail/).
static_assert(ngemb::attention_cache<ngemb::kv_cache<>> && ngemb::attention_layer<ngemb::attention<>>);
static_assert(ngemb::decoder_block<ngemb::presets::longcat_shortcut<>::block> &&
              ngemb::decoder_block<ngemb::presets::longcat_prenorm<>::block>);
static_assert(ngemb::moe_feed_forward<ngemb::presets::longcat_shortcut<>::experts> &&
              !ngemb::moe_feed_forward<ngemb::presets::longcat_shortcut<>::dense_ffn>);
static_assert(!ngemb::attention_layer<ngemb::swiglu<>> && !ngemb::decoder_block<ngemb::attention<>>);

}  // namespace

/// A user FFN with its own shape struct: the sublayer_shape overload next to it (found by argument-dependent lookup)
/// is all a block needs to load it.
namespace user_parts {

struct half_width_shape {
  std::int64_t hidden;
  std::int64_t intermediate;
};

inline half_width_shape sublayer_shape(const ngemb::model_config& config, std::type_identity<half_width_shape>) {
  return {config.hidden_size(), config.ffn_hidden_size / 2};
}

struct half_width_ffn {
  using policy_type = ngemb::host_policy;
  using shape = half_width_shape;
  half_width_shape dims;
  static half_width_ffn load(const policy_type& /*policy*/, const ngemb::checkpoint& /*source*/,
                             const std::string& /*prefix*/, const shape& loaded) {
    return {loaded};
  }
  void save(const policy_type& /*policy*/, const std::string& /*prefix*/, ngemb::tensor_collection& /*out*/) const {}
  void forward(const policy_type& /*policy*/, std::size_t /*tokens*/, view<const float> /*x*/, view<float> /*y*/) {}
};

}  // namespace user_parts

TEST_CASE("sublayer_shape: a user shape's overload is found by argument-dependent lookup") {
  static_assert(ngemb::decoder_block<ngemb::prenorm_block<ngemb::attention<>, user_parts::half_width_ffn>>);
  ngemb::model_config config;
  config.ngram.hidden_size = 32;
  config.ffn_hidden_size = 64;
  const auto dims = ngemb::detail::shape_from_config<user_parts::half_width_ffn>(config);
  CHECK(dims.hidden == 32);
  CHECK(dims.intermediate == 32);
  const auto dense = ngemb::detail::shape_from_config<ngemb::swiglu<>>(config);
  CHECK(dense.intermediate == 64);
}

TEST_CASE("rms_norm matches the reference, in place too") { ngemb_test::check_rms_norm(policy); }

TEST_CASE("rotary embedding: position 0 is the identity, and rotations preserve each pair's norm") {
  const ngemb::rotary_embedding rotary{8, 10000.0};
  std::vector<float> head = {0.5f, -1.0f, 0.25f, 2.0f, -0.75f, 1.5f, -0.125f, 0.3f};
  const std::vector<float> original = head;
  rotary.apply(head.data(), 0);
  CHECK(head == original);
  rotary.apply(head.data(), 37);
  for (std::size_t i = 0; i < 4; ++i) {
    const double before = original[i] * original[i] + original[i + 4] * original[i + 4];
    const double after = head[i] * head[i] + head[i + 4] * head[i + 4];
    CHECK(after == doctest::Approx(before).epsilon(1e-6));
  }
  CHECK(head[0] != original[0]);  // pair 0 turns by 37 radians
}

TEST_CASE("attention over ragged prefill, decode and chunked steps matches full causal attention (MHA and GQA)") {
  for (const auto& c : ngemb_test::attention_cases()) {
    auto layer = load_case(c);
    CHECK(layer.dimensions().heads == c.heads);
    ngemb_test::check_against_reference(c, ngemb_test::run_schedule(policy, layer, c));
  }
}

TEST_CASE("softmax_exp: within one ulp of exp on [-87, 0], exactly 1 at 0, 0 below -87 and at -infinity") {
  double worst_ulps = 0.0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -87.0f * static_cast<float>(i) / 200000.0f;
    const double exact = std::exp(static_cast<double>(x));
    const auto rounded = static_cast<float>(exact);
    const double ulp = static_cast<double>(std::nextafter(rounded, 2.0f) - rounded);
    worst_ulps = std::max(worst_ulps, std::abs(double(ngemb::detail::softmax_exp(x)) - exact) / ulp);
  }
  CHECK(worst_ulps <= 1.0);
  CHECK(ngemb::detail::softmax_exp(0.0f) == 1.0f);
  CHECK(ngemb::detail::softmax_exp(-87.5f) == 0.0f);
  CHECK(ngemb::detail::softmax_exp(-3.4e38f) == 0.0f);
  CHECK(ngemb::detail::softmax_exp(-std::numeric_limits<float>::infinity()) == 0.0f);
}

namespace long_context {

/// The fp64 causal GQA attention of whole sequences (HF Llama's rotate_half RoPE), output rows [tokens x H] per
/// sequence, from the same fp32 weights.
std::vector<double> reference_attention(const ngemb::attention_shape& shape, const std::vector<float>& x,
                                        const std::vector<float>& wq, const std::vector<float>& wk,
                                        const std::vector<float>& wv, const std::vector<float>& wo) {
  const auto hidden = static_cast<std::size_t>(shape.hidden);
  const auto dim = static_cast<std::size_t>(shape.head_dim);
  const auto heads = static_cast<std::size_t>(shape.heads);
  const auto kv_heads = static_cast<std::size_t>(shape.kv_heads);
  const std::size_t tokens = x.size() / hidden;
  const auto project = [&](const std::vector<float>& w, std::size_t rows) {
    std::vector<double> y(tokens * rows, 0.0);
    for (std::size_t t = 0; t < tokens; ++t) {
      for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t i = 0; i < hidden; ++i) {
          y[t * rows + r] += double(x[t * hidden + i]) * double(w[r * hidden + i]);
        }
      }
    }
    return y;
  };
  std::vector<double> q = project(wq, heads * dim);
  std::vector<double> k = project(wk, kv_heads * dim);
  const std::vector<double> v = project(wv, kv_heads * dim);
  const auto rotate = [&](std::vector<double>& rows, std::size_t count) {
    for (std::size_t t = 0; t < tokens; ++t) {
      for (std::size_t h = 0; h < count; ++h) {
        double* head = rows.data() + (t * count + h) * dim;
        for (std::size_t i = 0; i < dim / 2; ++i) {
          const double angle = double(t) * std::pow(shape.rope_theta, -2.0 * double(i) / double(dim));
          const double first = head[i];
          const double second = head[i + dim / 2];
          head[i] = first * std::cos(angle) - second * std::sin(angle);
          head[i + dim / 2] = second * std::cos(angle) + first * std::sin(angle);
        }
      }
    }
  };
  rotate(q, heads);
  rotate(k, kv_heads);
  std::vector<double> context(tokens * heads * dim, 0.0);
  for (std::size_t t = 0; t < tokens; ++t) {
    for (std::size_t h = 0; h < heads; ++h) {
      const std::size_t g = h / (heads / kv_heads);
      std::vector<double> scores(t + 1);
      double most = -1e300;
      for (std::size_t p = 0; p <= t; ++p) {
        double dot = 0.0;
        for (std::size_t d = 0; d < dim; ++d) {
          dot += q[(t * heads + h) * dim + d] * k[(p * kv_heads + g) * dim + d];
        }
        scores[p] = dot / std::sqrt(double(dim));
        most = std::max(most, scores[p]);
      }
      double sum = 0.0;
      for (double& score : scores) {
        score = std::exp(score - most);
        sum += score;
      }
      for (std::size_t p = 0; p <= t; ++p) {
        for (std::size_t d = 0; d < dim; ++d) {
          context[(t * heads + h) * dim + d] += scores[p] / sum * v[(p * kv_heads + g) * dim + d];
        }
      }
    }
  }
  std::vector<double> out(tokens * hidden, 0.0);
  for (std::size_t t = 0; t < tokens; ++t) {
    for (std::size_t r = 0; r < hidden; ++r) {
      for (std::size_t i = 0; i < heads * dim; ++i) {
        out[t * hidden + r] += context[t * heads * dim + i] * double(wo[r * heads * dim + i]);
      }
    }
  }
  return out;
}

}  // namespace long_context

TEST_CASE("attention: contexts of several position blocks and kv groups of more than one operation's heads match "
          "fp64 attention") {
  // 100 positions span four blocks of 32 (the last partial); a group of 10 query heads per kv head takes two
  // operations on the host (8 + 2); head_dim 12 leaves a tail past the 8-lane partial sums.
  std::mt19937 engine(115);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto random = [&](std::size_t count, float scale) {
    std::vector<float> values(count);
    for (float& value : values) {
      value = scale * normal(engine);
    }
    return values;
  };
  for (const ngemb::attention_shape shape : {ngemb::attention_shape{40, 20, 2, 12, 10000.0},
                                             ngemb::attention_shape{32, 4, 1, 16, 500.0}}) {
    CAPTURE(shape.heads);
    const auto hidden = static_cast<std::size_t>(shape.hidden);
    const auto width = static_cast<std::size_t>(shape.heads * shape.head_dim);
    const auto kv_width = static_cast<std::size_t>(shape.kv_heads * shape.head_dim);
    const float spread = 1.0f / std::sqrt(float(shape.hidden));
    const auto wq = random(width * hidden, 2.0f * spread), wk = random(kv_width * hidden, 2.0f * spread);
    const auto wv = random(kv_width * hidden, spread), wo = random(hidden * width, spread);
    ngemb::attention<> layer(policy, shape, {.q = view<const float>(wq), .k = view<const float>(wk),
                                             .v = view<const float>(wv), .o = view<const float>(wo)});
    // Two sequences: 70 then 33 tokens prefilled in one ragged step, then chunks, then decode steps to 100 and 40.
    const std::vector<std::vector<float>> inputs{random(100 * hidden, 1.0f), random(40 * hidden, 1.0f)};
    const std::vector<std::vector<std::int64_t>> schedule{{70, 33}, {5, 1}, {1, 6}, {24, 0}};
    for (const ngemb::host_policy& run : {policy, ngemb::host_policy{1}}) {
      ngemb::kv_cache<> cache(run, 1, shape.kv_heads, shape.head_dim, 3, 128);
      const std::vector<std::int32_t> all_slots{cache.allocate(), cache.allocate()};
      std::vector<std::vector<float>> outputs(2);
      std::vector<std::size_t> done(2, 0);
      for (const auto& sizes : schedule) {
        std::vector<std::int32_t> slots;
        std::vector<std::int64_t> counts;
        std::vector<float> x;
        for (std::size_t s = 0; s < 2; ++s) {
          if (sizes[s] > 0) {
            slots.push_back(all_slots[s]);
            counts.push_back(sizes[s]);
            x.insert(x.end(), inputs[s].begin() + static_cast<std::ptrdiff_t>(done[s] * hidden),
                     inputs[s].begin() + static_cast<std::ptrdiff_t>((done[s] + std::size_t(sizes[s])) * hidden));
          }
        }
        std::vector<float> out(x.size());
        cache.begin(run, view<const std::int32_t>(slots), view<const std::int64_t>(counts));
        layer.forward(run, cache, 0, view<const float>(x), view<float>(out));
        cache.commit();
        std::size_t row = 0;
        for (std::size_t s = 0; s < 2; ++s) {
          const auto rows = static_cast<std::size_t>(sizes[s]);
          outputs[s].insert(outputs[s].end(), out.begin() + static_cast<std::ptrdiff_t>(row * hidden),
                            out.begin() + static_cast<std::ptrdiff_t>((row + rows) * hidden));
          row += rows;
          done[s] += rows;
        }
      }
      for (std::size_t s = 0; s < 2; ++s) {
        const std::vector<double> expected = long_context::reference_attention(shape, inputs[s], wq, wk, wv, wo);
        REQUIRE(outputs[s].size() == expected.size());
        double worst = 0.0;
        for (std::size_t i = 0; i < expected.size(); ++i) {
          worst = std::max(worst, std::abs(double(outputs[s][i]) - expected[i]) / (1.0 + std::abs(expected[i])));
        }
        CHECK(worst < 1e-5);  // the fp32 projections' error: 2.5e-6 measured, before the blocks as after
      }
    }
  }
}

TEST_CASE("a rejected speculative step, truncated away, leaves the outputs of a fresh run") {
  for (const auto& c : ngemb_test::attention_cases()) {
    auto layer = load_case(c);
    const auto fresh = ngemb_test::run_schedule(policy, layer, c);
    for (const int rejected_after : {0, 2}) {
      INFO(c.name << " rejected after step " << rejected_after);
      CHECK(ngemb_test::run_schedule(policy, layer, c, rejected_after) == fresh);
    }
  }
}

TEST_CASE("lm_head matches the reference") { ngemb_test::check_lm_head(policy); }

TEST_CASE("lm_head with bf16 weights: the fp32 head over the same rounded weights, saved as bf16") {
  constexpr std::int64_t hidden = 24;
  constexpr std::int64_t vocab = 301;
  std::mt19937 random(5);
  std::normal_distribution<float> normal;
  std::vector<float> norm_weight(hidden);
  std::vector<float> weight(vocab * hidden);
  std::generate(norm_weight.begin(), norm_weight.end(), [&] { return 1.0f + 0.1f * normal(random); });
  std::generate(weight.begin(), weight.end(), [&] { return normal(random); });
  std::vector<float> rounded(weight.size());
  std::transform(weight.begin(), weight.end(), rounded.begin(), [](float value) { return float(ngemb::bf16(value)); });
  ngemb::lm_head<ngemb::host_policy, ngemb::bf16> head(
      policy, ngemb::rms_norm<>(policy, view<const float>(norm_weight), 1e-6f), vocab, view<const float>(weight));
  ngemb::lm_head<> exact(policy, ngemb::rms_norm<>(policy, view<const float>(norm_weight), 1e-6f), vocab,
                         view<const float>(rounded));
  for (const std::size_t tokens : {std::size_t{1}, std::size_t{5}, std::size_t{33}}) {
    std::vector<float> x(tokens * hidden);
    std::generate(x.begin(), x.end(), [&] { return normal(random); });
    std::vector<float> logits(tokens * vocab);
    std::vector<float> want(tokens * vocab);
    head.forward(policy, tokens, view<const float>(x), view<float>(logits));
    exact.forward(policy, tokens, view<const float>(x), view<float>(want));
    for (std::size_t i = 0; i < logits.size(); ++i) {
      REQUIRE(logits[i] == doctest::Approx(want[i]).epsilon(1e-5).scale(1.0));
    }
  }
  ngemb::tensor_collection tensors;
  head.save(policy, "", tensors);
  const auto saved = std::find_if(tensors.tensors().begin(), tensors.tensors().end(),
                                  [](const ngemb::tensor_to_write& tensor) { return tensor.name == "lm_head.weight"; });
  REQUIRE(saved != tensors.tensors().end());
  CHECK(saved->dtype == "BF16");
}

TEST_CASE("save then load gives the same tensors and outputs") {
  temporary_folder folder("round_trip");
  ngemb::tensor_collection saved;
  const auto cases = ngemb_test::attention_cases();
  const auto& golden = ngemb_test::attention_golden();
  for (const auto& c : cases) {
    load_case(c).save(policy, c.prefix, saved);
  }
  const auto& head_case = golden.at("lm_head");
  const float eps = head_case.at("eps").get<float>();
  ngemb::lm_head<>::load(policy, ngemb_test::attention_checkpoint(), "",
                         {.hidden = head_case.at("hidden"), .vocab_size = head_case.at("vocab"), .eps = eps})
      .save(policy, "", saved);
  ngemb::write_safetensors_checkpoint(folder.path(), saved.tensors(), std::size_t{1} << 14);  // several shards
  const ngemb::safetensors_checkpoint written(folder.path());
  const auto& original = ngemb_test::attention_checkpoint();
  CHECK(written.names() == original.names());
  for (const std::string& name : original.names()) {
    INFO(name);
    CHECK(written.info(name).shape == original.info(name).shape);
    const auto shape = original.info(name).shape;
    CHECK(ngemb::read_tensor_as<float>(written, name, shape) == ngemb::read_tensor_as<float>(original, name, shape));
  }
  for (const auto& c : cases) {
    auto reloaded = ngemb::attention<>::load(policy, written, c.prefix, c.shape<ngemb::host_policy>());
    auto layer = load_case(c);
    CHECK(ngemb_test::run_schedule(policy, reloaded, c) == ngemb_test::run_schedule(policy, layer, c));
  }
  ngemb::tensor_collection norm_only;
  ngemb::rms_norm<>::load(policy, written, "model.norm", {.hidden = head_case.at("hidden"), .eps = eps})
      .save(policy, "final_norm", norm_only);
  REQUIRE(norm_only.size() == 1);
  CHECK(norm_only.tensors()[0].name == "final_norm.weight");
}

TEST_CASE("kv_cache slot bookkeeping") {
  ngemb::kv_cache<> cache(policy, 1, 1, 2, 3, 8);
  CHECK(cache.allocate() == 0);
  CHECK(cache.allocate() == 1);
  cache.free(0);
  CHECK(cache.free_slot_count() == 2);
  CHECK(cache.allocate() == 0);
  const std::vector<std::int32_t> slots = {1, 0};
  const std::vector<std::int64_t> sizes = {3, 0};
  cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(sizes));
  CHECK(cache.step_begun());
  CHECK(cache.step_tokens() == 3);
  CHECK(cache.step_positions() == 3);
  CHECK(cache.length(1) == 0);  // lengths change at commit
  cache.commit();
  CHECK_FALSE(cache.step_begun());
  CHECK(cache.step_tokens() == 0);
  CHECK(cache.length(1) == 3);
  CHECK(cache.length(0) == 0);
  SUBCASE("a second begin replaces an uncommitted one") {
    const std::vector<std::int64_t> other = {1, 2};
    cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(sizes));
    cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(other));
    CHECK(cache.step_tokens() == 3);
    cache.commit();
    CHECK(cache.length(1) == 4);
    CHECK(cache.length(0) == 2);
  }
  SUBCASE("truncate and reset shorten a slot; a freed slot comes back empty") {
    cache.truncate(1, 1);
    CHECK(cache.length(1) == 1);
    cache.truncate(1, 1);
    CHECK(cache.length(1) == 1);
    cache.reset(1);
    CHECK(cache.length(1) == 0);
    const std::vector<std::int64_t> more = {2, 0};
    cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(more));
    cache.commit();
    cache.free(1);
    CHECK(cache.allocate() == 1);
    CHECK(cache.length(1) == 0);
  }
  SUBCASE("truncate, reset and free discard a begun step") {
    cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(sizes));
    cache.truncate(1, 2);
    CHECK_FALSE(cache.step_begun());
    CHECK_THROWS_AS(cache.commit(), ngemb::invalid_argument);
  }
}

TEST_CASE("model layer errors") {
  const auto cases = ngemb_test::attention_cases();
  const auto& mha = cases.at(0);
  const auto& checkpoint = ngemb_test::attention_checkpoint();
  const std::vector<float> square(24 * 24, 0.5f);

  SUBCASE("heads not divisible by kv_heads") {
    const ngemb::attention<>::shape shape{24, 3, 2, 8, 10000.0};
    CHECK_THROWS_WITH_AS(ngemb::attention<>(policy, shape,
                                            {.q = view<const float>(square), .k = view<const float>(square),
                                             .v = view<const float>(square), .o = view<const float>(square)}),
                         doctest::Contains("heads = 3 is not a multiple of kv_heads = 2"), ngemb::invalid_argument);
    CHECK_THROWS_AS(ngemb::attention<>::load(policy, checkpoint, mha.prefix, shape), ngemb::invalid_argument);
  }
  SUBCASE("odd head_dim") {
    const ngemb::attention<>::shape shape{24, 3, 3, 7, 10000.0};
    CHECK_THROWS_WITH_AS(ngemb::attention<>::load(policy, checkpoint, mha.prefix, shape),
                         doctest::Contains("head_dim = 7 must be even"), ngemb::invalid_argument);
  }
  SUBCASE("wrong weight shapes") {
    const ngemb::attention<>::shape shape{24, 3, 3, 8, 10000.0};
    const std::vector<float> short_k(23 * 24, 0.5f);
    CHECK_THROWS_WITH_AS(ngemb::attention<>(policy, shape,
                                            {.q = view<const float>(square), .k = view<const float>(short_k),
                                             .v = view<const float>(square), .o = view<const float>(square)}),
                         doctest::Contains("k_proj [kv_heads*head_dim x H] must hold 24 x 24 values, got 552"),
                         ngemb::shape_mismatch);
    const ngemb::attention<>::shape gqa_sized{32, 4, 2, 12, 10000.0};
    CHECK_THROWS_WITH_AS(ngemb::attention<>::load(policy, checkpoint, mha.prefix, gqa_sized),
                         doctest::Contains("has shape [24, 24], expected [48, 32]"), ngemb::format_error);
    CHECK_THROWS_AS(ngemb::rms_norm<>::load(policy, checkpoint, "model.norm", {.hidden = 31, .eps = 1e-6f}),
                    ngemb::format_error);
    const std::vector<float> norm_weight(32, 1.0f);
    const std::vector<float> head_weight(50 * 31, 1.0f);
    CHECK_THROWS_WITH_AS(ngemb::lm_head<>(policy, ngemb::rms_norm<>(policy, view<const float>(norm_weight), 1e-6f), 50,
                                          view<const float>(head_weight)),
                         doctest::Contains("must hold 50 x 32 = 1600 values, got 1550"), ngemb::shape_mismatch);
    CHECK_THROWS_AS(ngemb::rms_norm<>(policy, view<const float>(), 1e-6f), ngemb::shape_mismatch);
  }
  SUBCASE("missing tensor names") {
    const auto shape = mha.shape<ngemb::host_policy>();
    CHECK_THROWS_WITH_AS(ngemb::attention<>::load(policy, checkpoint, "model.layers.7.self_attn.0", shape),
                         doctest::Contains("no tensor \"model.layers.7.self_attn.0.q_proj.weight\""),
                         ngemb::format_error);
    CHECK_THROWS_WITH_AS(ngemb::rms_norm<>::load(policy, checkpoint, "model.final_norm", {.hidden = 32, .eps = 1e-6f}),
                         doctest::Contains("no tensor \"model.final_norm.weight\""), ngemb::format_error);
  }

  ngemb::kv_cache<> cache(policy, 2, mha.kv_heads, mha.head_dim, 2, 6);
  const std::int32_t slot = cache.allocate();
  SUBCASE("unknown, freed and repeated slots") {
    const std::vector<std::int32_t> unknown = {slot, 5};
    const std::vector<std::int64_t> sizes = {1, 1};
    CHECK_THROWS_WITH_AS(cache.begin(policy, view<const std::int32_t>(unknown), view<const std::int64_t>(sizes)),
                         doctest::Contains("kv_cache::begin: slot 5 is not an allocated slot (the cache has 2 slots)"),
                         ngemb::invalid_argument);
    const std::vector<std::int32_t> twice = {slot, slot};
    CHECK_THROWS_WITH_AS(cache.begin(policy, view<const std::int32_t>(twice), view<const std::int64_t>(sizes)),
                         doctest::Contains("listed twice"), ngemb::invalid_argument);
    CHECK_THROWS_AS(static_cast<void>(cache.length(1)), ngemb::invalid_argument);
    CHECK_THROWS_AS(cache.free(-1), ngemb::invalid_argument);
    cache.free(slot);
    CHECK_THROWS_AS(cache.reset(slot), ngemb::invalid_argument);
    CHECK_THROWS_AS(cache.truncate(slot, 0), ngemb::invalid_argument);
  }
  SUBCASE("all slots in use") {
    cache.allocate();
    CHECK_THROWS_WITH_AS(cache.allocate(), doctest::Contains("all 2 slots are in use"), ngemb::invalid_argument);
  }
  SUBCASE("slot overflow, negative sizes, sizes and slots of different counts") {
    const std::vector<std::int32_t> slots = {slot};
    const std::vector<std::int64_t> four = {4};
    cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(four));
    cache.commit();
    const std::vector<std::int64_t> three = {3};
    CHECK_THROWS_WITH_AS(cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(three)),
                         doctest::Contains("slot 0 holds 4 positions and cannot take 3 more (max_positions = 6)"),
                         ngemb::invalid_argument);
    const std::vector<std::int64_t> negative = {-1};
    CHECK_THROWS_AS(cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(negative)),
                    ngemb::invalid_argument);
    const std::vector<std::int64_t> two_sizes = {1, 1};
    CHECK_THROWS_AS(cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(two_sizes)),
                    ngemb::shape_mismatch);
    CHECK_THROWS_WITH_AS(cache.truncate(slot, 5), doctest::Contains("holds 4 positions, cannot keep 5"),
                         ngemb::invalid_argument);
    CHECK_THROWS_AS(cache.commit(), ngemb::invalid_argument);
  }
  SUBCASE("forward with x of the wrong size, without a begun step, on a foreign layer or cache") {
    auto layer = load_case(mha);
    const std::vector<std::int32_t> slots = {slot};
    const std::vector<std::int64_t> sizes = {2};
    std::vector<float> x(2 * 24, 0.5f);
    std::vector<float> out(2 * 24);
    CHECK_THROWS_WITH_AS(layer.forward(policy, cache, 0, view<const float>(x), view<float>(out)),
                         doctest::Contains("no begun step"), ngemb::invalid_argument);
    cache.begin(policy, view<const std::int32_t>(slots), view<const std::int64_t>(sizes));
    std::vector<float> short_x(2 * 24 - 1, 0.5f);
    CHECK_THROWS_WITH_AS(layer.forward(policy, cache, 0, view<const float>(short_x), view<float>(out)),
                         doctest::Contains("attention: x must hold 2 x 24 = 48 values, got 47"), ngemb::shape_mismatch);
    CHECK_THROWS_AS(layer.forward(policy, cache, 0, view<const float>(x), view<float>(short_x)), ngemb::shape_mismatch);
    CHECK_THROWS_WITH_AS(layer.forward(policy, cache, 2, view<const float>(x), view<float>(out)),
                         doctest::Contains("layer 2 is outside the cache's 2 attention layers"),
                         ngemb::invalid_argument);
    ngemb::kv_cache<> other(policy, 1, 1, mha.head_dim, 1, 4);
    const std::int32_t other_slot = other.allocate();
    other.begin(policy, view<const std::int32_t>(&other_slot, 1), view<const std::int64_t>(sizes));
    CHECK_THROWS_AS(layer.forward(policy, other, 0, view<const float>(x), view<float>(out)), ngemb::shape_mismatch);
    layer.forward(policy, cache, 0, view<const float>(x), view<float>(out));  // the checks left the step usable
    cache.commit();
    CHECK(cache.length(slot) == 2);
  }
  SUBCASE("rms_norm and lm_head inputs of the wrong size") {
    const std::vector<float> weight(4, 1.0f);
    const ngemb::rms_norm<> norm(policy, view<const float>(weight), 1e-6f);
    std::vector<float> x(7, 1.0f);
    std::vector<float> y(8);
    CHECK_THROWS_WITH_AS(norm.forward(policy, 2, view<const float>(x), view<float>(y)),
                         doctest::Contains("rms_norm: x must hold 2 x 4 = 8 values, got 7"), ngemb::shape_mismatch);
    const std::vector<float> head_weight(3 * 4, 1.0f);
    ngemb::lm_head<> head(policy, ngemb::rms_norm<>(policy, view<const float>(weight), 1e-6f), 3,
                          view<const float>(head_weight));
    std::vector<float> logits(5);
    CHECK_THROWS_WITH_AS(head.forward(policy, 2, view<const float>(y), view<float>(logits)),
                         doctest::Contains("lm_head: logits must hold 2 x 3 = 6 values, got 5"), ngemb::shape_mismatch);
    CHECK_THROWS_AS(head.forward(policy, 2, view<const float>(x), view<float>(y).subview(0, 6)), ngemb::shape_mismatch);
  }
  SUBCASE("bad cache and norm parameters") {
    CHECK_THROWS_WITH_AS(ngemb::kv_cache<>(policy, 0, 1, 2, 1, 1),
                         doctest::Contains("attention_layers must be >= 1, got 0"),
                         ngemb::invalid_argument);
    const std::vector<float> weight(4, 1.0f);
    CHECK_THROWS_AS(ngemb::rms_norm<>(policy, view<const float>(weight), -1.0f), ngemb::invalid_argument);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// model_config hardening (issue 9): crafted config.json fields are named errors, before any arithmetic uses them.

#include <nlohmann/json.hpp>

#include "ngemb/model/config_json.hpp"
#include "ngemb/model/model_config.hpp"

namespace {

nlohmann::json reference_config() {
  return nlohmann::json::parse(
      ngemb::to_json(ngemb::read_model_config(std::filesystem::path(NGEMB_REFERENCE_DIR) / "model" / "shortcut")));
}

template <class Error>
void check_field_error(const char* field, const nlohmann::json& value, const std::string& needle) {
  CAPTURE(field);
  nlohmann::json config = reference_config();
  config[field] = value;
  CHECK_THROWS_WITH_AS((void)ngemb::parse_model_config(config.dump(), "crafted/config.json"),
                       doctest::Contains(needle.c_str()), Error);
}

}  // namespace

TEST_CASE("model_config: crafted fields are refused by name, never divided by, truncated or allocated") {
  // Divided by before validation (SIGFPE) when head_dim is absent.
  nlohmann::json no_head_dim = reference_config();
  no_head_dim.erase("head_dim");
  no_head_dim["num_attention_heads"] = 0;
  CHECK_THROWS_WITH_AS((void)ngemb::parse_model_config(no_head_dim.dump()),
                       doctest::Contains("num_attention_heads must be in [1, 4096], got 0"), ngemb::invalid_argument);
  // Read as 6 and 2 by a static_cast before.
  check_field_error<ngemb::invalid_argument>("n_routed_experts", std::int64_t{4294967302},
                                             "n_routed_experts = 4294967302 is outside");
  check_field_error<ngemb::invalid_argument>("num_key_value_heads", (std::int64_t{1} << 32) + 2,
                                             "num_key_value_heads = 4294967298 is outside");
  // Reported as "-1" before.
  check_field_error<ngemb::invalid_argument>("max_position_embeddings", std::uint64_t{18446744073709551615u},
                                             "max_position_embeddings = 18446744073709551615 is outside");
  // Ended in a bare std::bad_alloc naming no field.
  check_field_error<ngemb::invalid_argument>("max_position_embeddings", std::int64_t{1} << 40,
                                             "max_position_embeddings must be in [1, 16777216]");
  check_field_error<ngemb::invalid_argument>("hidden_size", std::int64_t{1317624576693539401},
                                             "hidden_size (H) 1317624576693539401 is larger than 2^20");
  check_field_error<ngemb::invalid_argument>("num_layers", 1 << 20, "num_layers must be in [1, 4096]");
  check_field_error<ngemb::invalid_argument>("ffn_hidden_size", std::int64_t{1} << 40, "ffn_hidden_size must be in");
  check_field_error<ngemb::invalid_argument>("routed_scaling_factor", 1e300, "routed_scaling_factor must be");
  check_field_error<ngemb::format_error>("rope_theta", nlohmann::json::array({1, 2}), "must be a number, got [1,2]");
  check_field_error<ngemb::format_error>("norm_topk_prob", std::string(500, 'x'), "...");
}

TEST_CASE("kv_cache: a cache too large for memory is out_of_memory naming the sizes to lower") {
  CHECK_THROWS_WITH_AS(ngemb::kv_cache<ngemb::host_policy>(policy, 64, 64, 256, 1 << 20, std::int64_t{1} << 24),
                       doctest::Contains("kv_cache: layers x slots x max_positions x kv_heads x head_dim"),
                       ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(ngemb::kv_cache<ngemb::host_policy>(policy, 64, 64, 256, 1024, std::int64_t{1} << 20),
                       doctest::Contains("lower max_sequences or max_positions"), ngemb::out_of_memory);
}

// ---------------------------------------------------------------------------------------------------------------
// MLA (issue 11): mla_attention and its latent cache against transformers' own LongcatFlashMLA
// (tests/reference/mla_reference.py, tolerances in mla_golden.hpp), both forms, rollback, round trip and errors.

#include "mla_golden.hpp"
#include "ngemb/model/latent_cache.hpp"
#include "ngemb/model/mla_attention.hpp"

namespace {

using ngemb::mla_form;

static_assert(ngemb::attention_cache<ngemb::latent_cache<>> &&
              ngemb::attention_cache<ngemb::latent_cache<ngemb::host_policy, ngemb::bf16>>);
static_assert(ngemb::attention_layer<ngemb::mla_attention<>> &&
              ngemb::attention_layer<ngemb::mla_attention<ngemb::host_policy, ngemb::bf16>>);
static_assert(std::is_same_v<ngemb::mla_attention<>::cache_type, ngemb::latent_cache<>> &&
              std::is_same_v<ngemb::mla_attention<>::shape, ngemb::mla_shape>);

/// A checkpoint that forwards to another but hides one tensor or reports another dtype for it.
class altered_checkpoint final : public ngemb::checkpoint {
 public:
  altered_checkpoint(const ngemb::checkpoint& inner, std::string name, std::string dtype = "")
      : inner_(inner), name_(std::move(name)), dtype_(std::move(dtype)) {
    if (!dtype_.empty()) {
      altered_ = inner.info(name_);
      altered_.dtype = dtype_;
    }
  }
  [[nodiscard]] bool contains(std::string_view name) const override {
    return (dtype_.empty() && name == name_) ? false : inner_.contains(name);
  }
  [[nodiscard]] const ngemb::tensor_info& info(std::string_view name) const override {
    if (name == name_) {
      if (dtype_.empty()) {
        throw ngemb::format_error("altered checkpoint: no tensor \"" + std::string(name) + "\"");
      }
      return altered_;
    }
    return inner_.info(name);
  }
  [[nodiscard]] std::span<const std::byte> bytes(std::string_view name) const override { return inner_.bytes(name); }
  [[nodiscard]] std::vector<std::string> names() const override {
    std::vector<std::string> kept;
    for (std::string& name : inner_.names()) {
      if (!dtype_.empty() || name != name_) {
        kept.push_back(std::move(name));
      }
    }
    return kept;
  }
  [[nodiscard]] std::string location_of(std::string_view name) const override { return inner_.location_of(name); }

 private:
  const ngemb::checkpoint& inner_;
  std::string name_;
  std::string dtype_;
  ngemb::tensor_info altered_;
};

}  // namespace

TEST_CASE("mla_attention matches transformers' LongcatFlashMLA over ragged prefill, decode and chunked steps") {
  for (const auto& c : ngemb_test::mla_cases()) {
    auto layer = ngemb_test::load_mla(policy, c);
    for (const mla_form form : {mla_form::absorbed, mla_form::expanded, mla_form::automatic}) {
      INFO(c.name << " form " << static_cast<int>(form));
      layer.set_form(form);
      ngemb_test::check_mla_against_reference(c, ngemb_test::run_mla_schedule(policy, layer, c.steps, c.inputs));
    }
  }
}

TEST_CASE("rotary: YaRN inverse frequencies, attention factor and MLA softmax scale equal transformers'") {
  for (const auto& c : ngemb_test::mla_cases()) {
    INFO(c.name);
    const auto frequencies =
        ngemb::rotary_frequencies::of(c.shape.qk_rope_head_dim, c.shape.rope_theta, c.shape.rope);
    const std::vector<double> inverses = frequencies.inverses();
    REQUIRE(inverses.size() == c.inv_freq.size());
    for (std::size_t i = 0; i < inverses.size(); ++i) {
      CHECK(inverses[i] == doctest::Approx(c.inv_freq[i]).epsilon(1e-6));  // transformers computes them in fp32
    }
    CHECK(frequencies.attention_factor == doctest::Approx(c.attention_scaling).epsilon(1e-12));
    CHECK(std::pow(c.shape.qk_head_dim(), -0.5) * c.shape.rope.softmax_scale_factor() ==
          doctest::Approx(c.softmax_scale).epsilon(1e-12));
  }
  const auto yarn = ngemb_test::mla_cases().at(2);
  REQUIRE(yarn.name == "yarn");
  CHECK(yarn.attention_scaling != 1.0);  // the case exercises the factor and a ramp strictly inside (0, 1)
  CHECK(yarn.inv_freq[1] != doctest::Approx(0.1));
}

TEST_CASE("interleaved rotary: pairs (2i, 2i+1) written de-interleaved; position 0 only de-interleaves") {
  const ngemb::interleaved_rotary rotary{ngemb::rotary_frequencies::of(6, 10000.0, {})};
  const std::vector<float> head = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  std::vector<float> out(6);
  rotary.apply(head.data(), out.data(), 0);
  CHECK(out == std::vector<float>{1.0f, 3.0f, 5.0f, 2.0f, 4.0f, 6.0f});
  rotary.apply(head.data(), out.data(), 3);
  CHECK(out[0] == doctest::Approx(1.0 * std::cos(3.0) - 2.0 * std::sin(3.0)));
  CHECK(out[3] == doctest::Approx(2.0 * std::cos(3.0) + 1.0 * std::sin(3.0)));
}

TEST_CASE("mla: the absorbed and the expanded form agree within 1e-5 over mixed ragged steps") {
  for (const int q_lora_rank : {16, 0}) {
    const ngemb::mla_shape shape = ngemb_test::random_form_shape(q_lora_rank);
    const ngemb_test::random_mla_weights weights(shape, 11u + static_cast<unsigned>(q_lora_rank));
    const auto inputs = ngemb_test::random_inputs(ngemb_test::mixed_lengths(), shape.hidden, 5);
    ngemb::mla_attention<> layer(policy, shape, weights.views);
    layer.set_form(mla_form::absorbed);
    const auto absorbed = ngemb_test::run_mla_schedule(policy, layer, ngemb_test::mixed_steps(), inputs);
    layer.set_form(mla_form::expanded);
    const auto expanded = ngemb_test::run_mla_schedule(policy, layer, ngemb_test::mixed_steps(), inputs);
    const double difference = ngemb_test::relative_difference(absorbed, expanded);
    INFO("q_lora_rank " << q_lora_rank << ": absorbed vs expanded " << difference);
    CHECK(difference <= ngemb_test::form_tolerance);
    CHECK(difference > 0.0);  // two computations, not one run twice

    ngemb::mla_attention<ngemb::host_policy, ngemb::bf16> bf16_layer(policy, shape, weights.views);
    bf16_layer.set_form(mla_form::absorbed);
    const auto bf16_absorbed = ngemb_test::run_mla_schedule(policy, bf16_layer, ngemb_test::mixed_steps(), inputs);
    bf16_layer.set_form(mla_form::expanded);
    const auto bf16_expanded = ngemb_test::run_mla_schedule(policy, bf16_layer, ngemb_test::mixed_steps(), inputs);
    CHECK(ngemb_test::relative_difference(bf16_absorbed, bf16_expanded) <= ngemb_test::form_tolerance);
  }
}

TEST_CASE("mla: long contexts on two threads (splits of several chunks each) give the expanded form's outputs") {
  ngemb::mla_shape shape = ngemb_test::random_form_shape(16);
  shape.heads = 8;  // with 7 tokens over 3000 positions: work enough for both threads
  const ngemb_test::random_mla_weights weights(shape, 23u);
  const ngemb::host_policy two_threads{2};
  ngemb::mla_attention<> layer(two_threads, shape, weights.views);
  const std::vector<std::int64_t> lengths = {2996, 2990};
  auto cache = ngemb::mla_attention<>::make_cache(two_threads, shape, 1, 2, 3000);
  const std::vector<std::int32_t> slots = {cache.allocate(), cache.allocate()};
  cache.begin(two_threads, ngemb::view<const std::int32_t>(slots), ngemb::view<const std::int64_t>(lengths));
  cache.commit();
  // Stored latents drawn directly (a 3000-token prefill would dominate the test's time).
  std::mt19937 engine(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const ngemb::detail::latent_storage<float> storage = cache.storage();
  std::generate(storage.values, storage.values + cache.stored_values(), [&] { return normal(engine); });
  const std::vector<std::int64_t> sizes = {4, 3};
  const auto inputs = ngemb_test::random_inputs({7}, shape.hidden, 9);
  const auto step = [&](mla_form form) {
    layer.set_form(form);
    std::vector<float> out(inputs.at(0).size());
    cache.begin(two_threads, ngemb::view<const std::int32_t>(slots), ngemb::view<const std::int64_t>(sizes));
    layer.forward(two_threads, cache, 0, ngemb::view<const float>(inputs.at(0)), ngemb::view<float>(out));
    cache.truncate(slots[0], lengths[0]);
    cache.truncate(slots[1], lengths[1]);
    return std::vector<std::vector<float>>{out};
  };
  const double difference = ngemb_test::relative_difference(step(mla_form::absorbed), step(mla_form::expanded));
  INFO("absorbed vs expanded " << difference);
  CHECK(difference <= ngemb_test::form_tolerance);
}

TEST_CASE("latent_cache: exactly kv_lora_rank + rope values per token; bf16 rounds them and stays in tolerance") {
  const auto c = ngemb_test::mla_cases().at(0);
  const int values = c.shape.kv_lora_rank + c.shape.qk_rope_head_dim;
  auto cache = ngemb::mla_attention<>::make_cache(policy, c.shape, 3, 2, 5);
  CHECK(cache.values_per_token() == values);
  CHECK(cache.bytes_per_token() == static_cast<std::size_t>(values) * 4);
  CHECK(cache.stored_values() == static_cast<std::size_t>(3 * 2 * 5 * values));
  auto bf16_cache = ngemb::mla_attention<ngemb::host_policy, ngemb::bf16>::make_cache(policy, c.shape, 3, 2, 5);
  CHECK(bf16_cache.bytes_per_token() == static_cast<std::size_t>(values) * 2);
  CHECK(bf16_cache.stored_values() == cache.stored_values());

  // The same steps into an fp32 and a bf16 cache: every stored bf16 value is the fp32 value rounded.
  auto layer = ngemb_test::load_mla(policy, c);
  auto bf16_layer = ngemb_test::load_mla<ngemb::host_policy, ngemb::bf16>(policy, c);
  ngemb_test::mla_schedule_cache<ngemb::mla_attention<>> state(policy, c.shape);
  ngemb_test::mla_schedule_cache<ngemb::mla_attention<ngemb::host_policy, ngemb::bf16>> bf16_state(policy, c.shape);
  const auto& step = c.steps.at(0);
  ngemb_test::run_mla_step(policy, layer, state, c.inputs, step, {0, 0});
  ngemb_test::run_mla_step(policy, bf16_layer, bf16_state, c.inputs, step, {0, 0});
  const std::int32_t slot = state.slot_of[0];
  for (std::int64_t position = 0; position < step.sizes[0]; ++position) {
    const auto exact = state.cache.token_values(policy, ngemb_test::mla_schedule_layer, slot, position);
    const auto rounded = bf16_state.cache.token_values(policy, ngemb_test::mla_schedule_layer, slot, position);
    REQUIRE(exact.size() == static_cast<std::size_t>(values));
    for (std::size_t i = 0; i < exact.size(); ++i) {
      CHECK(rounded[i] == static_cast<float>(ngemb::bf16(exact[i])));
    }
  }
  CHECK_THROWS_AS((void)state.cache.token_values(policy, 0, slot, step.sizes[0]), ngemb::invalid_argument);

  for (const auto& golden : ngemb_test::mla_cases()) {
    auto bf16_golden = ngemb_test::load_mla<ngemb::host_policy, ngemb::bf16>(policy, golden);
    ngemb_test::check_mla_against_reference(
        golden, ngemb_test::run_mla_schedule(policy, bf16_golden, golden.steps, golden.inputs),
        ngemb_test::bf16_tolerance);
  }
}

TEST_CASE("mla: a rejected speculative step, truncated away, leaves the outputs of a fresh run") {
  for (const auto& c : ngemb_test::mla_cases()) {
    auto layer = ngemb_test::load_mla(policy, c);
    for (const mla_form form : {mla_form::absorbed, mla_form::expanded}) {
      layer.set_form(form);
      const auto fresh = ngemb_test::run_mla_schedule(policy, layer, c.steps, c.inputs);
      for (const int rejected_after : {0, 2}) {
        INFO(c.name << " form " << static_cast<int>(form) << " rejected after step " << rejected_after);
        CHECK(ngemb_test::run_mla_schedule(policy, layer, c.steps, c.inputs, rejected_after) == fresh);
      }
    }
  }
}

TEST_CASE("mla: save then load gives the same tensors and outputs") {
  temporary_folder folder("mla_round_trip");
  ngemb::tensor_collection saved;
  const auto cases = ngemb_test::mla_cases();
  for (const auto& c : cases) {
    ngemb_test::load_mla(policy, c).save(policy, c.prefix, saved);
  }
  ngemb::write_safetensors_checkpoint(folder.path(), saved.tensors(), std::size_t{1} << 14);
  const ngemb::safetensors_checkpoint written(folder.path());
  const auto& original = ngemb_test::mla_checkpoint();
  CHECK(written.names() == original.names());
  for (const std::string& name : original.names()) {
    INFO(name);
    const auto shape = original.info(name).shape;
    CHECK(written.info(name).shape == shape);
    CHECK(ngemb::read_tensor_as<float>(written, name, shape) == ngemb::read_tensor_as<float>(original, name, shape));
  }
  for (const auto& c : cases) {
    auto reloaded = ngemb::mla_attention<>::load(policy, written, c.prefix, c.shape);
    auto layer = ngemb_test::load_mla(policy, c);
    CHECK(ngemb_test::run_mla_schedule(policy, reloaded, c.steps, c.inputs) ==
          ngemb_test::run_mla_schedule(policy, layer, c.steps, c.inputs));
  }
}

TEST_CASE("mla: bad input is a typed error naming the tensor, field or cache") {
  const auto cases = ngemb_test::mla_cases();
  const auto& c = cases.at(3);  // attention_bias: every tensor kind
  REQUIRE(c.name == "bias");
  const auto& checkpoint = ngemb_test::mla_checkpoint();
  using layer_type = ngemb::mla_attention<>;

  SUBCASE("a missing tensor") {
    for (const char* tensor : {"kv_b_proj.weight", "o_proj.bias", "q_a_layernorm.weight"}) {
      const altered_checkpoint missing(checkpoint, c.prefix + "." + tensor);
      CHECK_THROWS_WITH_AS(layer_type::load(policy, missing, c.prefix, c.shape),
                           doctest::Contains(("no tensor \"" + c.prefix + "." + tensor + "\"").c_str()),
                           ngemb::format_error);
    }
    ngemb::mla_shape no_q_lora = c.shape;
    no_q_lora.q_lora_rank = 0;
    CHECK_THROWS_WITH_AS(layer_type::load(policy, checkpoint, c.prefix, no_q_lora),
                         doctest::Contains((c.prefix + ".q_proj.weight").c_str()), ngemb::format_error);
  }
  SUBCASE("a wrong shape") {
    ngemb::mla_shape narrow = c.shape;
    narrow.kv_lora_rank = 20;
    CHECK_THROWS_WITH_AS(layer_type::load(policy, checkpoint, c.prefix, narrow),
                         doctest::Contains("kv_a_proj_with_mqa.weight\" has shape [32, 32], expected [28, 32]"),
                         ngemb::format_error);
    ngemb::mla_shape more_heads = c.shape;
    more_heads.heads = 5;
    CHECK_THROWS_WITH_AS(layer_type::load(policy, checkpoint, c.prefix, more_heads),
                         doctest::Contains("q_b_proj.weight\" has shape [64, 16], expected [80, 16]"),
                         ngemb::format_error);
    const ngemb_test::random_mla_weights weights(c.shape, 3);
    auto short_kv_b = weights.views;
    short_kv_b.kv_b_proj = short_kv_b.kv_b_proj.subview(0, short_kv_b.kv_b_proj.size() - 1);
    CHECK_THROWS_WITH_AS(layer_type(policy, c.shape, short_kv_b),
                         doctest::Contains("mla_attention: kv_b_proj.weight must hold [80 x 24] = 1920 values, got 1919"),
                         ngemb::shape_mismatch);
    auto stray_q_proj = weights.views;
    stray_q_proj.q_proj = weights.views.q_b_proj;
    CHECK_THROWS_WITH_AS(layer_type(policy, c.shape, stray_q_proj),
                         doctest::Contains("q_proj.weight is given but this shape (q_lora_rank = 16"),
                         ngemb::invalid_argument);
  }
  SUBCASE("a wrong dtype") {
    const altered_checkpoint integer(checkpoint, c.prefix + ".o_proj.weight", "I32");
    CHECK_THROWS_WITH_AS(layer_type::load(policy, integer, c.prefix, c.shape),
                         doctest::Contains("o_proj.weight\" has dtype I32, expected F32, BF16 or F16"),
                         ngemb::format_error);
  }
  SUBCASE("a bad shape field") {
    ngemb::mla_shape odd = c.shape;
    odd.qk_rope_head_dim = 7;
    CHECK_THROWS_WITH_AS(layer_type::load(policy, checkpoint, c.prefix, odd),
                         doctest::Contains("qk_rope_head_dim = 7 must be even"), ngemb::invalid_argument);
    ngemb::mla_shape no_latent = c.shape;
    no_latent.kv_lora_rank = 0;
    CHECK_THROWS_WITH_AS(layer_type::load(policy, checkpoint, c.prefix, no_latent),
                         doctest::Contains("kv_lora_rank must be >= 1, got 0"), ngemb::invalid_argument);
    ngemb::mla_shape bad_yarn = c.shape;
    bad_yarn.rope.kind = ngemb::rope_scaling::type::yarn;
    bad_yarn.rope.factor = 4.0;
    CHECK_THROWS_WITH_AS(layer_type::load(policy, checkpoint, c.prefix, bad_yarn),
                         doctest::Contains("original_max_position_embeddings must be >= 1, got 0"),
                         ngemb::invalid_argument);
  }
  SUBCASE("a cache of another shape, no begun step, a foreign layer, x of the wrong size") {
    auto layer = ngemb_test::load_mla(policy, c);
    auto cache = layer_type::make_cache(policy, c.shape, 2, 2, 6);
    const std::int32_t slot = cache.allocate();
    const std::vector<std::int64_t> sizes = {2};
    std::vector<float> x(2 * 32, 0.5f);
    std::vector<float> out(2 * 32);
    CHECK_THROWS_WITH_AS(layer.forward(policy, cache, 0, view<const float>(x), view<float>(out)),
                         doctest::Contains("no begun step"), ngemb::invalid_argument);
    cache.begin(policy, view<const std::int32_t>(&slot, 1), view<const std::int64_t>(sizes));
    CHECK_THROWS_WITH_AS(layer.forward(policy, cache, 0, view<const float>(x).subview(0, 63), view<float>(out)),
                         doctest::Contains("mla_attention: x must hold 2 x 32 = 64 values, got 63"),
                         ngemb::shape_mismatch);
    CHECK_THROWS_WITH_AS(layer.forward(policy, cache, 2, view<const float>(x), view<float>(out)),
                         doctest::Contains("layer 2 is outside the cache's 2 attention layers"),
                         ngemb::invalid_argument);
    ngemb::mla_shape other_shape = c.shape;
    other_shape.kv_lora_rank = 20;
    auto other = layer_type::make_cache(policy, other_shape, 2, 2, 6);
    const std::int32_t other_slot = other.allocate();
    other.begin(policy, view<const std::int32_t>(&other_slot, 1), view<const std::int64_t>(sizes));
    CHECK_THROWS_WITH_AS(layer.forward(policy, other, 0, view<const float>(x), view<float>(out)),
                         doctest::Contains("latent cache holds kv_lora_rank + rope = 20 + 8 values per token, the "
                                           "layer needs 24 + 8"),
                         ngemb::shape_mismatch);
    layer.forward(policy, cache, 0, view<const float>(x), view<float>(out));  // the checks left the step usable
    cache.commit();
    CHECK(cache.length(slot) == 2);
  }
  SUBCASE("latent_cache slots and steps: kv_cache's errors under its own name") {
    auto cache = layer_type::make_cache(policy, c.shape, 1, 2, 4);
    const std::int32_t slot = cache.allocate();
    cache.allocate();
    CHECK_THROWS_WITH_AS(cache.allocate(), doctest::Contains("latent_cache: all 2 slots are in use"),
                         ngemb::invalid_argument);
    const std::vector<std::int64_t> five = {5};
    CHECK_THROWS_WITH_AS(cache.begin(policy, view<const std::int32_t>(&slot, 1), view<const std::int64_t>(five)),
                         doctest::Contains("latent_cache::begin: slot 0 holds 0 positions and cannot take 5 more"),
                         ngemb::invalid_argument);
    CHECK_THROWS_WITH_AS(cache.commit(), doctest::Contains("latent_cache::commit: no step is begun"),
                         ngemb::invalid_argument);
    CHECK_THROWS_WITH_AS(cache.truncate(slot, 1), doctest::Contains("holds 0 positions, cannot keep 1"),
                         ngemb::invalid_argument);
    CHECK_THROWS_WITH_AS(ngemb::latent_cache<>(policy, 1, 0, 8, 1, 1),
                         doctest::Contains("latent_cache: kv_lora_rank must be >= 1, got 0"), ngemb::invalid_argument);
  }
}
