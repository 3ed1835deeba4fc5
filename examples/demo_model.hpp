#pragma once
// The demo model of examples/generate (also timed by bench/model): LongCat-Flash-Lite's structure at a small size,
// built part by part from its constructors with seeded random weights, under any policy.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "ngemb/ngemb.hpp"

namespace ngemb_examples {

// The model as a type: LongCat's shortcut layers with bf16 n-gram tables and expert weights (as LongCat-Flash-Lite
// ships them), fp32 elsewhere.
template <class Policy>
using demo_parts = ngemb::presets::longcat_shortcut<Policy, ngemb::bf16>;
template <class Policy>
using demo_model = typename demo_parts<Policy>::model;

/// LongCat-Flash-Lite's structure (N=4, K=4 n-gram embedding; k of E routed + Z zero experts; shortcut layers)
/// at a size a laptop runs in seconds.
ngemb::model_config demo_config() {
  ngemb::model_config config;
  config.ngram.vocab_size = 8192;
  config.ngram.hidden_size = 256;
  config.ngram.max_order = 4;
  config.ngram.splits = 4;
  config.ngram.ratio = 4.0;
  config.ngram.eos_token = 2;
  config.num_layers = 4;
  config.num_attention_heads = 8;
  config.num_key_value_heads = 2;
  config.head_dim = 32;
  config.ffn_hidden_size = 512;
  config.expert_ffn_hidden_size = 128;
  config.n_routed_experts = 32;
  config.zero_expert_num = 16;
  config.moe_topk = 4;
  config.routed_scaling_factor = 6.0;
  config.rms_norm_eps = 1e-5;
  config.rope_theta = 10000.0;
  config.max_position_embeddings = 512;
  return config;
}

/// Gaussian parameters from one seeded stream; Linear weights get std 1/sqrt(fan_in), norms 1 +- 0.1.
class random_parameters {
 public:
  explicit random_parameters(std::uint64_t seed) : engine_(seed) {}

  template <class T = float>
  std::vector<T> normal(std::size_t count, double std, double mean = 0.0) {
    std::normal_distribution<double> distribution(mean, std);
    std::vector<T> values;
    values.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      values.push_back(static_cast<T>(static_cast<float>(distribution(engine_))));
    }
    return values;
  }
  template <class T = float>
  std::vector<T> linear(std::int64_t out_features, std::int64_t in_features) {
    return normal<T>(static_cast<std::size_t>(out_features * in_features), 1.0 / std::sqrt(double(in_features)));
  }
  template <class Policy>
  ngemb::rms_norm<Policy> norm(const Policy& policy, std::int64_t hidden, double eps) {
    return ngemb::rms_norm<Policy>(policy,
                                   ngemb::view<const float>(normal(static_cast<std::size_t>(hidden), 0.1, 1.0)),
                                   static_cast<float>(eps));
  }

 private:
  std::mt19937_64 engine_;
};

/// Every part built from its constructor: how a model is assembled in code rather than loaded.
template <class Policy>
demo_model<Policy> random_model(const Policy& policy, const ngemb::model_config& config, std::uint64_t seed) {
  random_parameters random(seed);
  const std::int64_t hidden = config.hidden_size();
  const ngemb::ngram_config& ngram = config.ngram;

  using parts = demo_parts<Policy>;
  typename parts::store tables(policy, ngram, true);
  const auto base = random.normal<ngemb::bf16>(tables.base().size(), 1.0);
  // Policy operations are called unqualified: argument-dependent lookup finds any policy's (policy/policy.hpp).
  copy_to(policy, ngemb::view<const ngemb::bf16>(base), tables.base());
  std::vector<std::vector<float>> projections;
  std::vector<ngemb::view<const float>> projection_views;
  for (int table = 0; table < ngram.num_tables(); ++table) {
    const auto rows = random.normal<ngemb::bf16>(tables.table(table).size(), 1.0);
    copy_to(policy, ngemb::view<const ngemb::bf16>(rows), tables.table(table));
    synchronize(policy);  // the host rows go out of scope
    projections.push_back(random.linear(hidden, ngram.row_width()));
    projection_views.emplace_back(projections.back());
  }
  typename parts::embedding ngram_embedding(
      ngram, std::move(tables),
      ngemb::fused_projection<float, Policy>(
          policy, {.num_tables = ngram.num_tables(), .row_width = ngram.row_width(), .output_width = hidden},
          std::span<const ngemb::view<const float>>(projection_views)));

  const ngemb::attention_shape attention_shape{hidden, config.num_attention_heads, config.num_key_value_heads,
                                               config.head_dim, config.rope_theta};
  const std::int64_t heads_width = std::int64_t{config.num_attention_heads} * config.head_dim;
  const std::int64_t kv_width = std::int64_t{config.num_key_value_heads} * config.head_dim;
  const auto attention = [&] {
    return typename parts::attention(policy, attention_shape,
                                     {.q = random.linear(heads_width, hidden),
                                      .k = random.linear(kv_width, hidden),
                                      .v = random.linear(kv_width, hidden),
                                      .o = random.linear(hidden, heads_width)});
  };
  const auto dense = [&] {
    const std::int64_t width = config.ffn_hidden_size;
    return typename parts::dense_ffn(policy, {.hidden = hidden, .intermediate = width},
                                     {.gate = random.linear(width, hidden),
                                      .up = random.linear(width, hidden),
                                      .down = random.linear(hidden, width)});
  };
  const auto moe = [&] {
    const ngemb::router_options options = config.router();
    const std::int64_t width = config.expert_ffn_hidden_size;
    typename parts::router router(
        policy, options, hidden,
        {.classifier = random.linear(options.num_experts(), hidden),
         .selection_bias = random.normal(static_cast<std::size_t>(options.num_experts()), 0.01)});
    const auto experts_times = [&](std::int64_t rows, std::int64_t columns) {
      return random.normal<ngemb::bf16>(static_cast<std::size_t>(options.routed_experts * rows * columns),
                                        1.0 / std::sqrt(double(columns)));
    };
    return typename parts::experts(policy, std::move(router),
                                   {.hidden = hidden, .expert_width = width, .router = options},
                                   {.gate = experts_times(width, hidden),
                                    .up = experts_times(width, hidden),
                                    .down = experts_times(hidden, width)});
  };
  std::vector<typename parts::block> blocks;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    blocks.emplace_back(std::array{random.norm(policy, hidden, config.rms_norm_eps),
                                   random.norm(policy, hidden, config.rms_norm_eps)},
                        std::array{attention(), attention()},
                        std::array{random.norm(policy, hidden, config.rms_norm_eps),
                                   random.norm(policy, hidden, config.rms_norm_eps)},
                        std::array{dense(), dense()}, moe());
  }
  ngemb::lm_head<Policy> head(policy, random.norm(policy, hidden, config.rms_norm_eps), config.vocab_size(),
                        random.linear(config.vocab_size(), hidden));
  return demo_model<Policy>(policy, config, std::move(ngram_embedding), std::move(blocks), std::move(head));
}

}  // namespace ngemb_examples
