#pragma once
// model_config from and to config.json text (model/model_config.hpp documents the fields). Kept apart from the
// struct so the blocks, which take a model_config, do not pull in the JSON parser: only whole-model loading and
// saving (causal_lm) and programs that read a config include this.
#include <cstdint>
#include <filesystem>
#include <optional>
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

/// `root[field]` when present and not null.
inline const nlohmann::json* find_field(const nlohmann::json& root, const char* field) {
  const auto found = root.find(field);
  return found == root.end() || found->is_null() ? nullptr : &*found;
}

inline bool bool_field(const nlohmann::json& root, const char* field, bool fallback, const std::string& source) {
  const nlohmann::json* value = find_field(root, field);
  if (value == nullptr) {
    return fallback;
  }
  if (!value->is_boolean()) {
    throw format_error(source + ": field \"" + field + "\" must be true or false, got " + describe_json(*value));
  }
  return value->get<bool>();
}

inline std::string string_field(const nlohmann::json& root, const char* field, const std::string& source) {
  const nlohmann::json* value = find_field(root, field);
  if (value == nullptr) {
    return {};
  }
  if (!value->is_string()) {
    throw format_error(source + ": field \"" + field + "\" must be a string, got " + describe_json(*value));
  }
  return value->get<std::string>();
}

/// The defaults of transformers' LongcatFlashConfig, which a LongCat config.json leaves out where it can (its
/// README: missing optional fields take these). ngemb's demo layout has no defaults for them.
struct longcat_defaults {
  static constexpr std::int64_t max_position_embeddings = 131072;
  static constexpr double rms_norm_eps = 1e-5;
  static constexpr double rope_theta = 10000000.0;  // LongcatFlashConfig.default_theta
  static constexpr std::int64_t ffn_hidden_size = 12288;
  static constexpr int q_lora_rank = 1536;
  static constexpr int kv_lora_rank = 512;
  static constexpr int qk_nope_head_dim = 128;
  static constexpr int qk_rope_head_dim = 64;
  static constexpr int v_head_dim = 128;
  static constexpr int moe_topk = 12;
  static constexpr int n_routed_experts = 512;
  static constexpr int zero_expert_num = 256;
  static constexpr std::int64_t expert_ffn_hidden_size = 2048;
  static constexpr double routed_scaling_factor = 6.0;
};

/// vocab_size, hidden_size and eos_token_id of a model without an n-gram embedding. A list of several EOS ids is
/// dropped: only the n-gram hash uses the segment token.
inline ngram_config plain_embedding_fields(const nlohmann::json& root, const std::string& source) {
  ngram_config config;
  config.vocab_size = integer_field<std::int64_t>(require_field(root, "vocab_size", source), "vocab_size", source);
  config.hidden_size = integer_field<std::int64_t>(require_field(root, "hidden_size", source), "hidden_size", source);
  if (const nlohmann::json* eos = find_field(root, "eos_token_id")) {
    if (!eos->is_array()) {
      config.eos_token = integer_field<std::int64_t>(*eos, "eos_token_id", source);
    } else if (eos->size() == 1) {
      config.eos_token = integer_field<std::int64_t>((*eos)[0], "eos_token_id", source);
    }
  }
  return config;
}

/// rope_theta and the RoPE scaling as transformers' convert_rope_params_to_dict and standardize_rope_params
/// resolve them: a non-empty `rope_scaling` replaces `rope_parameters`; `rope_theta` inside that object wins over
/// the top-level one, which wins over the default; `rope_type` (or the older `type`) defaults to "default";
/// a top-level `original_max_position_embeddings` wins over the object's, which defaults to
/// max_position_embeddings; a null `factor` is max_position_embeddings / original_max_position_embeddings.
inline void read_rope(const nlohmann::json& root, const std::string& source, std::optional<double> default_theta,
                      model_config& config) {
  const nlohmann::json* scaling = find_field(root, "rope_scaling");
  const char* object_name = "rope_scaling";
  if (scaling == nullptr || (scaling->is_object() && scaling->empty())) {
    scaling = find_field(root, "rope_parameters");
    object_name = "rope_parameters";
  }
  if (scaling != nullptr && !scaling->is_object()) {
    throw format_error(source + ": field \"" + object_name + "\" must be an object, got " + describe_json(*scaling));
  }
  const std::string prefix = std::string(object_name) + ".";
  const auto field_name = [&](const char* field) { return prefix + field; };
  const auto number = [&](const char* field) -> std::optional<double> {
    const nlohmann::json* value = scaling != nullptr ? find_field(*scaling, field) : nullptr;
    if (value == nullptr) {
      return std::nullopt;
    }
    if (!value->is_number()) {
      throw format_error(source + ": field \"" + field_name(field) + "\" must be a number, got " +
                         describe_json(*value));
    }
    return value->get<double>();
  };

  if (const std::optional<double> theta = number("rope_theta")) {
    config.rope_theta = *theta;
  } else if (find_field(root, "rope_theta") != nullptr) {
    config.rope_theta = number_field(root, "rope_theta", source);
  } else if (default_theta) {
    config.rope_theta = *default_theta;
  } else {
    throw format_error(source + ": missing field \"rope_theta\" (top level or inside rope_parameters)");
  }

  config.rope = {};
  if (scaling == nullptr) {
    return;
  }
  std::string type = string_field(*scaling, "rope_type", source + ": " + object_name);
  if (type.empty()) {
    type = string_field(*scaling, "type", source + ": " + object_name);
  }
  if (type.empty() || type == "default") {
    return;
  }
  if (type != "yarn") {
    throw invalid_argument(source + ": " + field_name("rope_type") + " \"" + clipped_text(type) +
                           "\" is not implemented (\"default\" or \"yarn\")");
  }
  rope_scaling& rope = config.rope;
  rope.kind = rope_scaling::type::yarn;
  const nlohmann::json* original = find_field(root, "original_max_position_embeddings");
  if (original != nullptr) {
    rope.original_max_position_embeddings =
        integer_field<std::int64_t>(*original, "original_max_position_embeddings", source);
  } else if (const nlohmann::json* inner = find_field(*scaling, "original_max_position_embeddings")) {
    const std::string name = field_name("original_max_position_embeddings");
    rope.original_max_position_embeddings = integer_field<std::int64_t>(*inner, name.c_str(), source);
  } else {
    rope.original_max_position_embeddings = config.max_position_embeddings;
  }
  if (const std::optional<double> factor = number("factor")) {
    rope.factor = *factor;
  } else if (rope.original_max_position_embeddings > 0) {
    rope.factor = static_cast<double>(config.max_position_embeddings) /
                  static_cast<double>(rope.original_max_position_embeddings);
  }
  rope.beta_fast = number("beta_fast").value_or(rope.beta_fast);
  rope.beta_slow = number("beta_slow").value_or(rope.beta_slow);
  rope.mscale = number("mscale").value_or(0.0);
  rope.mscale_all_dim = number("mscale_all_dim").value_or(0.0);
  rope.attention_factor = number("attention_factor");
  rope.truncate = bool_field(*scaling, "truncate", true, source + ": " + object_name);
}

/// Refuses the values of fields that select behaviour ngemb does not implement, naming the field.
inline void refuse_unsupported(const nlohmann::json& root, const std::string& source) {
  const auto only = [&](const char* field, const char* supported) {
    const std::string value = string_field(root, field, source);
    if (!value.empty() && value != supported) {
      throw invalid_argument(source + ": " + field + " \"" + clipped_text(value) + "\" is not implemented (only \"" +
                             supported + "\")");
    }
  };
  only("zero_expert_type", "identity");  // SGLang's and vLLM's LongCat name; "" or absent is identity there too
  only("scoring_func", "softmax");       // DeepSeek's name for the router's score function
  only("hidden_act", "silu");            // the experts' and dense FFNs' activation
}

}  // namespace detail

/// Parses config.json text (format_error for malformed JSON, missing fields or wrong types; invalid_argument
/// for values out of range or not implemented, naming the field). Unknown fields are ignored.
///
/// Without `model_type` (ngemb's demo layout): the n-gram trio, GQA head fields, rms_norm_eps, rope_theta and
/// max_position_embeddings are required; the MoE fields are optional (0 when absent: a dense model).
/// With `model_type` "longcat_flash" or "longcat_flash_ngram": the fields transformers' LongcatFlashConfig has
/// defaults for take them when absent (the MLA and MoE sizes, rope_theta, rms_norm_eps, max_position_embeddings,
/// ffn_hidden_size), the MLA fields are always read, and the n-gram trio is required only for "longcat_flash_ngram".
/// `q_lora_rank` null means a single q_proj; `head_dim` defaults to qk_rope_head_dim (transformers' rotary width).
inline model_config parse_model_config(std::string_view json_text, const std::string& source = "config.json") {
  const nlohmann::json root = detail::parse_json(json_text, source);
  if (!root.is_object()) {
    throw format_error(source + ": the top level must be a JSON object");
  }
  model_config config;
  config.model_type = detail::string_field(root, "model_type", source);
  if (!model_config::known_model_type(config.model_type)) {
    throw invalid_argument(source + ": model_type \"" + detail::clipped_text(config.model_type) +
                           "\" is not one ngemb implements (\"longcat_flash\", \"longcat_flash_ngram\" or none for "
                           "ngemb's demo layout)");
  }
  const bool longcat = !config.model_type.empty();
  using defaults = detail::longcat_defaults;
  config.ngram = config.has_ngram_embedding() ? parse_ngram_config(json_text, source)
                                              : detail::plain_embedding_fields(root, source);
  detail::refuse_unsupported(root, source);
  using detail::integer_field;
  using detail::require_field;
  // A field that is required without a fallback (the demo layout) and takes the fallback when absent.
  const auto int_field = [&]<class T>(const char* field, std::optional<T> fallback) -> T {
    const nlohmann::json* value = detail::find_field(root, field);
    if (value == nullptr && fallback) {
      return *fallback;
    }
    return integer_field<T>(require_field(root, field, source), field, source);
  };
  const auto longcat_or = [&]<class T>(T longcat_default) -> std::optional<T> {
    return longcat ? std::optional<T>(longcat_default) : std::nullopt;
  };
  const auto double_field = [&](const char* field, std::optional<double> fallback) {
    return detail::find_field(root, field) == nullptr && fallback ? *fallback
                                                                   : detail::number_field(root, field, source);
  };
  config.num_layers = int_field("num_layers", std::optional<int>());
  config.num_attention_heads = int_field("num_attention_heads", std::optional<int>());
  config.num_key_value_heads = int_field("num_key_value_heads", std::optional<int>(config.num_attention_heads));
  config.ffn_hidden_size = int_field("ffn_hidden_size", longcat_or(defaults::ffn_hidden_size));
  config.expert_ffn_hidden_size =
      int_field("expert_ffn_hidden_size", std::optional<std::int64_t>(longcat ? defaults::expert_ffn_hidden_size : 0));
  config.n_routed_experts = int_field("n_routed_experts", std::optional<int>(longcat ? defaults::n_routed_experts : 0));
  config.zero_expert_num = int_field("zero_expert_num", std::optional<int>(longcat ? defaults::zero_expert_num : 0));
  config.moe_topk = int_field("moe_topk", std::optional<int>(longcat ? defaults::moe_topk : 0));
  config.routed_scaling_factor =
      double_field("routed_scaling_factor", longcat ? defaults::routed_scaling_factor : 1.0);
  config.norm_topk_prob = detail::bool_field(root, "norm_topk_prob", false, source);
  config.router_bias = detail::bool_field(root, "router_bias", false, source);
  config.attention_bias = detail::bool_field(root, "attention_bias", false, source);
  config.rms_norm_eps = double_field("rms_norm_eps", longcat_or(defaults::rms_norm_eps));
  config.max_position_embeddings =
      int_field("max_position_embeddings", longcat_or(defaults::max_position_embeddings));
  detail::read_rope(root, source, longcat_or(defaults::rope_theta), config);

  if (longcat || detail::find_field(root, "kv_lora_rank") != nullptr) {
    mla_config mla;
    // q_lora_rank: null is a q_proj; absent is LongcatFlashConfig's default (or, in the demo layout, a q_proj).
    const auto q_lora = root.find("q_lora_rank");
    mla.q_lora_rank = q_lora == root.end() ? (longcat ? defaults::q_lora_rank : 0)
                      : q_lora->is_null()  ? 0
                                           : integer_field<int>(*q_lora, "q_lora_rank", source);
    mla.kv_lora_rank = int_field("kv_lora_rank", longcat_or(defaults::kv_lora_rank));
    mla.qk_nope_head_dim = int_field("qk_nope_head_dim", longcat_or(defaults::qk_nope_head_dim));
    mla.qk_rope_head_dim = int_field("qk_rope_head_dim", longcat_or(defaults::qk_rope_head_dim));
    mla.v_head_dim = int_field("v_head_dim", longcat_or(defaults::v_head_dim));
    mla.scale_q_lora = detail::bool_field(root, "mla_scale_q_lora", true, source);
    mla.scale_kv_lora = detail::bool_field(root, "mla_scale_kv_lora", true, source);
    if (const nlohmann::json* qk_head_dim = detail::find_field(root, "qk_head_dim")) {
      const int given = integer_field<int>(*qk_head_dim, "qk_head_dim", source);
      if (given != mla.qk_head_dim()) {
        throw invalid_argument(source + ": qk_head_dim = " + std::to_string(given) +
                               " must equal qk_nope_head_dim + qk_rope_head_dim = " +
                               std::to_string(mla.qk_head_dim()));
      }
    }
    config.head_dim = int_field("head_dim", std::optional<int>(mla.qk_rope_head_dim));
    config.mla = mla;
  } else {
    // The default head_dim divides by the head count, which validate() has not checked yet.
    const int default_head_dim =
        config.num_attention_heads > 0 ? static_cast<int>(config.hidden_size() / config.num_attention_heads) : 0;
    config.head_dim = int_field("head_dim", std::optional<int>(default_head_dim));
  }
  config.validate();
  return config;
}

/// Reads `path` (a config.json file, or a checkpoint folder holding one).
inline model_config read_model_config(const std::filesystem::path& path) {
  const detail::config_file config = detail::read_config_file(path);
  return parse_model_config(config.text, config.file.string());
}

/// config.json text that parse_model_config reads back to the same config (and transformers reads as the same
/// model for the LongCat types: rope_theta at the top level, a YaRN scaling as `rope_scaling`).
inline std::string to_json(const model_config& config) {
  nlohmann::json root;
  const ngram_config& ngram = config.ngram;
  if (!config.model_type.empty()) {
    root["model_type"] = config.model_type;
  }
  root["vocab_size"] = ngram.vocab_size;
  root["hidden_size"] = ngram.hidden_size;
  if (config.has_ngram_embedding()) {
    root["emb_neighbor_num"] = ngram.max_order;
    root["emb_split_num"] = ngram.splits;
    if (ngram.m_base) {
      root["m_base"] = *ngram.m_base;
    } else {
      root["ngram_vocab_size_ratio"] = ngram.ratio.value_or(0.0);
    }
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
  if (config.router_bias) {
    root["router_bias"] = true;
  }
  if (config.attention_bias) {
    root["attention_bias"] = true;
  }
  if (config.mla) {
    const mla_config& mla = *config.mla;
    root["q_lora_rank"] = mla.q_lora_rank == 0 ? nlohmann::json(nullptr) : nlohmann::json(mla.q_lora_rank);
    root["kv_lora_rank"] = mla.kv_lora_rank;
    root["qk_nope_head_dim"] = mla.qk_nope_head_dim;
    root["qk_rope_head_dim"] = mla.qk_rope_head_dim;
    root["v_head_dim"] = mla.v_head_dim;
    root["mla_scale_q_lora"] = mla.scale_q_lora;
    root["mla_scale_kv_lora"] = mla.scale_kv_lora;
  }
  if (config.rope.kind == rope_scaling::type::yarn) {
    const rope_scaling& rope = config.rope;
    nlohmann::json scaling = {{"rope_type", "yarn"},
                              {"factor", rope.factor},
                              {"original_max_position_embeddings", rope.original_max_position_embeddings},
                              {"beta_fast", rope.beta_fast},
                              {"beta_slow", rope.beta_slow},
                              {"truncate", rope.truncate}};
    if (rope.mscale != 0.0) {
      scaling["mscale"] = rope.mscale;
    }
    if (rope.mscale_all_dim != 0.0) {
      scaling["mscale_all_dim"] = rope.mscale_all_dim;
    }
    if (rope.attention_factor) {
      scaling["attention_factor"] = *rope.attention_factor;
    }
    root["rope_scaling"] = scaling;
  }
  return root.dump(2) + "\n";
}

}  // namespace ngemb
