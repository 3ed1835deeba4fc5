#pragma once
// The whole model's sizes (config.json), read and written with the Hugging Face LongCat-Flash field names where they
// exist: the n-gram fields of SPEC §1, `num_layers` (LongCat counts shortcut layers, each with two attention
// sublayers), `ffn_hidden_size`, `expert_ffn_hidden_size`, `n_routed_experts`, `zero_expert_num`, `moe_topk`,
// `routed_scaling_factor`, `norm_topk_prob`, `rms_norm_eps`, `rope_theta`, `max_position_embeddings`. LongCat's
// attention is MLA; ngemb's is GQA, described by the Llama fields `num_attention_heads`, `num_key_value_heads`
// and `head_dim`.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/io/detail/json_input.hpp"
#include "ngemb/io/hf_config.hpp"
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

namespace detail {

inline double number_field(const nlohmann::json& root, const char* field, const std::string& source) {
  const nlohmann::json& value = require_field(root, field, source);
  if (!value.is_number()) {
    throw format_error(source + ": field \"" + field + "\" must be a number, got " +
                       describe_json(value));
  }
  return value.get<double>();
}

}  // namespace detail

/// Parses config.json text (format_error for malformed JSON, missing fields or wrong types; invalid_argument
/// for values out of range). MoE fields are optional (0 when absent: a dense model).
inline model_config parse_model_config(std::string_view json_text, const std::string& source = "config.json") {
  model_config config;
  config.ngram = parse_ngram_config(json_text, source);
  const nlohmann::json root = detail::parse_json(json_text, source);  // parse_ngram_config proved it parses
  using detail::integer_field;
  using detail::require_field;
  const auto required_int = [&]<class T>(const char* field, std::type_identity<T> /*type*/) {
    return integer_field<T>(require_field(root, field, source), field, source);
  };
  const auto optional_int = [&](const char* field, int fallback) {
    const auto found = root.find(field);
    return found == root.end() || found->is_null() ? fallback : integer_field<int>(*found, field, source);
  };
  config.num_layers = required_int("num_layers", std::type_identity<int>{});
  config.num_attention_heads = required_int("num_attention_heads", std::type_identity<int>{});
  config.num_key_value_heads = optional_int("num_key_value_heads", config.num_attention_heads);
  // The default head_dim divides by the head count, which validate() has not checked yet.
  const int default_head_dim =
      config.num_attention_heads > 0 ? static_cast<int>(config.hidden_size() / config.num_attention_heads) : 0;
  config.head_dim = optional_int("head_dim", default_head_dim);
  config.ffn_hidden_size = required_int("ffn_hidden_size", std::type_identity<std::int64_t>{});
  if (const auto width = root.find("expert_ffn_hidden_size"); width != root.end() && !width->is_null()) {
    config.expert_ffn_hidden_size = integer_field<std::int64_t>(*width, "expert_ffn_hidden_size", source);
  }
  config.n_routed_experts = optional_int("n_routed_experts", 0);
  config.zero_expert_num = optional_int("zero_expert_num", 0);
  config.moe_topk = optional_int("moe_topk", 0);
  if (root.contains("routed_scaling_factor")) {
    config.routed_scaling_factor = detail::number_field(root, "routed_scaling_factor", source);
  }
  if (const auto normalize = root.find("norm_topk_prob"); normalize != root.end() && !normalize->is_null()) {
    if (!normalize->is_boolean()) {
      throw format_error(source + ": field \"norm_topk_prob\" must be true or false, got " +
                         detail::describe_json(*normalize));
    }
    config.norm_topk_prob = normalize->get<bool>();
  }
  config.rms_norm_eps = detail::number_field(root, "rms_norm_eps", source);
  config.rope_theta = detail::number_field(root, "rope_theta", source);
  config.max_position_embeddings = required_int("max_position_embeddings", std::type_identity<std::int64_t>{});
  config.validate();
  return config;
}

/// Reads `path` (a config.json file, or a checkpoint folder holding one).
inline model_config read_model_config(const std::filesystem::path& path) {
  const detail::config_file config = detail::read_config_file(path);
  return parse_model_config(config.text, config.file.string());
}

/// config.json text that parse_model_config reads back to the same config.
inline std::string to_json(const model_config& config) {
  nlohmann::json root;
  const ngram_config& ngram = config.ngram;
  root["vocab_size"] = ngram.vocab_size;
  root["hidden_size"] = ngram.hidden_size;
  root["emb_neighbor_num"] = ngram.max_order;
  root["emb_split_num"] = ngram.splits;
  if (ngram.m_base) {
    root["m_base"] = *ngram.m_base;
  } else {
    root["ngram_vocab_size_ratio"] = ngram.ratio.value_or(0.0);
  }
  if (ngram.eos_token) {
    root["eos_token_id"] = *ngram.eos_token;
  }
  root["num_layers"] = config.num_layers;
  root["num_attention_heads"] = config.num_attention_heads;
  root["num_key_value_heads"] = config.num_key_value_heads;
  root["head_dim"] = config.head_dim;
  root["ffn_hidden_size"] = config.ffn_hidden_size;
  root["expert_ffn_hidden_size"] = config.expert_ffn_hidden_size;
  root["n_routed_experts"] = config.n_routed_experts;
  root["zero_expert_num"] = config.zero_expert_num;
  root["moe_topk"] = config.moe_topk;
  root["routed_scaling_factor"] = config.routed_scaling_factor;
  root["norm_topk_prob"] = config.norm_topk_prob;
  root["rms_norm_eps"] = config.rms_norm_eps;
  root["rope_theta"] = config.rope_theta;
  root["max_position_embeddings"] = config.max_position_embeddings;
  return root.dump(2) + "\n";
}

}  // namespace ngemb
