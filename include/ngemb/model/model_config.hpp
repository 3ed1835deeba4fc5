#pragma once
// The whole model's sizes (config.json; model/config_json.hpp reads and writes them), with the Hugging Face LongCat-Flash field names where they
// exist: the n-gram fields of SPEC §1, `num_layers` (LongCat counts shortcut layers, each with two attention
// sublayers), `ffn_hidden_size`, `expert_ffn_hidden_size`, `n_routed_experts`, `zero_expert_num`, `moe_topk`,
// `routed_scaling_factor`, `norm_topk_prob`, `rms_norm_eps`, `rope_theta`, `max_position_embeddings`. LongCat's
// attention is MLA; ngemb's is GQA, described by the Llama fields `num_attention_heads`, `num_key_value_heads`
// and `head_dim`.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/moe/router.hpp"

namespace ngemb {

struct model_config {
  ngram_config ngram;  ///< vocab_size, hidden_size and the n-gram embedding (SPEC §1)
  int num_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;
  std::int64_t ffn_hidden_size = 0;         ///< dense SwiGLU width
  std::int64_t expert_ffn_hidden_size = 0;  ///< routed expert width
  int n_routed_experts = 0;
  int zero_expert_num = 0;
  int moe_topk = 0;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = false;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  std::int64_t max_position_embeddings = 0;

  [[nodiscard]] std::int64_t vocab_size() const { return ngram.vocab_size; }
  [[nodiscard]] std::int64_t hidden_size() const { return ngram.hidden_size; }

  [[nodiscard]] router_options router() const {
    router_options options;
    options.routed_experts = n_routed_experts;
    options.zero_experts = zero_expert_num;
    options.top_k = moe_topk;
    options.normalize_top_k = norm_topk_prob;
    options.routed_scaling_factor = static_cast<float>(routed_scaling_factor);
    return options;
  }

  /// Sane upper bounds: far above any released model, low enough that the sizes derived from them (weights, the
  /// KV cache) cannot overflow 64 bits, so a crafted config.json fails here, naming the field.
  static constexpr std::int64_t max_layers = 1 << 12;
  static constexpr std::int64_t max_heads = 1 << 12;
  static constexpr std::int64_t max_head_dim = 1 << 14;
  static constexpr std::int64_t max_ffn_width = std::int64_t{1} << 20;
  static constexpr std::int64_t max_experts = 1 << 16;
  static constexpr std::int64_t max_positions = std::int64_t{1} << 24;

  /// Throws invalid_argument naming the first field out of range. The MoE fields are checked by the router when
  /// a model has one (a dense model may leave them 0).
  void validate() const {
    ngram.validate();
    const auto fail = [](const std::string& message) { throw invalid_argument("model_config: " + message); };
    const auto in_range = [&](std::int64_t value, const char* field, std::int64_t minimum, std::int64_t maximum) {
      if (value < minimum || value > maximum) {
        fail(std::string(field) + " must be in [" + std::to_string(minimum) + ", " + std::to_string(maximum) +
             "], got " + std::to_string(value));
      }
    };
    in_range(num_layers, "num_layers", 1, max_layers);
    in_range(num_attention_heads, "num_attention_heads", 1, max_heads);
    in_range(num_key_value_heads, "num_key_value_heads", 1, max_heads);
    in_range(head_dim, "head_dim", 1, max_head_dim);
    in_range(ffn_hidden_size, "ffn_hidden_size", 1, max_ffn_width);
    in_range(expert_ffn_hidden_size, "expert_ffn_hidden_size", 0, max_ffn_width);
    in_range(n_routed_experts, "n_routed_experts", 0, max_experts);
    in_range(zero_expert_num, "zero_expert_num", 0, max_experts);
    in_range(moe_topk, "moe_topk", 0, max_experts);
    in_range(max_position_embeddings, "max_position_embeddings", 1, max_positions);
    if (num_attention_heads % num_key_value_heads != 0) {
      fail("num_attention_heads = " + std::to_string(num_attention_heads) +
           " must be a multiple of num_key_value_heads = " + std::to_string(num_key_value_heads));
    }
    if (head_dim % 2 != 0) {
      fail("head_dim must be even (rotary pairs), got " + std::to_string(head_dim));
    }
    if (!(rms_norm_eps > 0.0) || !(rope_theta > 0.0) || !std::isfinite(rms_norm_eps) || !std::isfinite(rope_theta)) {
      fail("rms_norm_eps and rope_theta must be finite and > 0, got " + std::to_string(rms_norm_eps) + " and " +
           std::to_string(rope_theta));
    }
    // The router computes in float: a factor that float cannot hold would turn every routed output into inf.
    if (!(std::abs(routed_scaling_factor) <= static_cast<double>(std::numeric_limits<float>::max()))) {
      fail("routed_scaling_factor must be a finite float, got " + std::to_string(routed_scaling_factor));
    }
  }
};

}  // namespace ngemb
