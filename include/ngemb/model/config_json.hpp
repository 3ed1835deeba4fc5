#pragma once
// model_config from and to config.json text (model/model_config.hpp documents the fields). Kept apart from the
// struct so the blocks, which take a model_config, do not pull in the JSON parser: only whole-model loading and
// saving (causal_lm) and programs that read a config include this.
#include <filesystem>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/io/detail/json_input.hpp"
#include "ngemb/io/hf_config.hpp"
#include "ngemb/model/model_config.hpp"

namespace ngemb {

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
