#pragma once
// The whole model's sizes (config.json; model/config_json.hpp reads and writes them), with the Hugging Face LongCat-Flash field names where they
// exist: the n-gram fields of SPEC §1, `num_layers` (LongCat counts shortcut layers, each with two attention
// sublayers), `ffn_hidden_size`, `expert_ffn_hidden_size`, `n_routed_experts`, `zero_expert_num`, `moe_topk`,
// `routed_scaling_factor`, `norm_topk_prob`, `router_bias`, `attention_bias`, `rms_norm_eps`, `rope_theta`,
// `max_position_embeddings`, and `rope_scaling` / `rope_parameters`. LongCat's attention is MLA (the `mla` fields);
// ngemb's demo layout (no `model_type`) uses GQA, described by the Llama fields `num_attention_heads`,
// `num_key_value_heads` and `head_dim`.
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <tuple>

#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/model/rope_scaling.hpp"
#include "ngemb/moe/router.hpp"

namespace ngemb {

/// The MLA fields of config.json (DeepSeek-V2/V3 and LongCat-Flash names).
///
/// `mla_scale_q_lora` / `mla_scale_kv_lora` default to true when config.json lacks them: transformers'
/// LongcatFlashMLA always applies both LoRA scalings and the checkpoints its save_pretrained writes carry no flags,
/// so a transformers checkpoint runs as transformers runs it. Some other loaders (vLLM/SGLang ports reading
/// `getattr(config, "mla_scale_q_lora", False)`) default them off; a config that means that must say false.
struct mla_config {
  int q_lora_rank = 0;  ///< 0: null in config.json (a single q_proj)
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  bool scale_q_lora = true;   ///< `mla_scale_q_lora`
  bool scale_kv_lora = true;  ///< `mla_scale_kv_lora`

  [[nodiscard]] int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool operator==(const mla_config&) const = default;
};

struct model_config {
  /// The `model_type` values ngemb reads: its own demo layout (no model_type), transformers' LongCat-Flash (a plain
  /// embedding) and LongCat-Flash-Lite's n-gram variant.
  static constexpr const char* demo_type = "";
  static constexpr const char* longcat_flash_type = "longcat_flash";
  static constexpr const char* longcat_flash_ngram_type = "longcat_flash_ngram";

  ngram_config ngram;  ///< vocab_size, hidden_size and the n-gram embedding (SPEC §1; only V, H, eos without one)
  std::string model_type;  ///< demo_type, longcat_flash_type or longcat_flash_ngram_type
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
  std::optional<mla_config> mla;  ///< set when config.json has kv_lora_rank (always for the LongCat types)
  rope_scaling rope;              ///< `rope_scaling` / `rope_parameters`
  bool attention_bias = false;    ///< biases on the attention input and output projections
  bool router_bias = false;       ///< a bias on the router's classifier

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

  /// False for transformers' `longcat_flash`, whose embedding is the plain [V x H] table.
  [[nodiscard]] bool has_ngram_embedding() const { return model_type != longcat_flash_type; }
  [[nodiscard]] static bool known_model_type(const std::string& type) {
    return type == demo_type || type == longcat_flash_type || type == longcat_flash_ngram_type;
  }

  bool operator==(const model_config& other) const {
    const auto ngram_fields = [](const ngram_config& c) {
      return std::tie(c.vocab_size, c.hidden_size, c.max_order, c.splits, c.ratio, c.m_base, c.eos_token,
                      c.ignored_tokens);
    };
    const auto fields = [](const model_config& c) {
      return std::tie(c.model_type, c.num_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                      c.ffn_hidden_size, c.expert_ffn_hidden_size, c.n_routed_experts, c.zero_expert_num, c.moe_topk,
                      c.routed_scaling_factor, c.norm_topk_prob, c.rms_norm_eps, c.rope_theta,
                      c.max_position_embeddings, c.mla, c.rope, c.attention_bias, c.router_bias);
    };
    return ngram_fields(ngram) == ngram_fields(other.ngram) && fields(*this) == fields(other);
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
    const auto fail = [](const std::string& message) { throw invalid_argument("model_config: " + message); };
    const auto in_range = [&](std::int64_t value, const char* field, std::int64_t minimum, std::int64_t maximum) {
      if (value < minimum || value > maximum) {
        fail(std::string(field) + " must be in [" + std::to_string(minimum) + ", " + std::to_string(maximum) +
             "], got " + std::to_string(value));
      }
    };
    if (!known_model_type(model_type)) {
      fail("model_type \"" + model_type + "\" is not one ngemb implements (\"" + longcat_flash_type + "\", \"" +
           longcat_flash_ngram_type + "\" or none for ngemb's demo layout)");
    }
    if (has_ngram_embedding()) {
      ngram.validate();
    } else {  // only the sizes a plain embedding uses
      in_range(ngram.vocab_size, "vocab_size", 1, std::int64_t{1} << 31);
      in_range(ngram.hidden_size, "hidden_size", 1, ngram_config::max_hidden_size);
      if (ngram.eos_token) {
        in_range(*ngram.eos_token, "eos_token_id", 0, ngram.vocab_size - 1);
      }
    }
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
    if (mla) {  // before the head_dim checks: in an MLA model head_dim follows qk_rope_head_dim
      validate_mla(*mla, fail, in_range);
    }
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
    validate_rope(fail);
  }

 private:
  template <class Fail, class InRange>
  void validate_mla(const mla_config& m, const Fail& fail, const InRange& in_range) const {
    in_range(m.q_lora_rank, "q_lora_rank", 0, max_ffn_width);
    in_range(m.kv_lora_rank, "kv_lora_rank", 1, max_ffn_width);
    in_range(m.qk_nope_head_dim, "qk_nope_head_dim", 0, max_head_dim);
    in_range(m.qk_rope_head_dim, "qk_rope_head_dim", 2, max_head_dim);
    in_range(m.v_head_dim, "v_head_dim", 1, max_head_dim);
    if (m.qk_rope_head_dim % 2 != 0) {
      fail("qk_rope_head_dim must be even (rotary pairs), got " + std::to_string(m.qk_rope_head_dim));
    }
    // transformers' rotary embedding takes its width from head_dim: any other value would rotate a different width.
    if (head_dim != m.qk_rope_head_dim) {
      fail("head_dim = " + std::to_string(head_dim) + " must equal qk_rope_head_dim = " +
           std::to_string(m.qk_rope_head_dim) + " in an MLA model (the rotary width)");
    }
  }

  template <class Fail>
  void validate_rope(const Fail& fail) const {
    if (rope.kind == rope_scaling::type::none) {
      return;
    }
    const auto positive = [&](double value, const char* field) {
      if (!(value > 0.0) || !std::isfinite(value)) {
        fail(std::string("rope_scaling.") + field + " must be finite and > 0, got " + std::to_string(value));
      }
    };
    const auto non_negative = [&](double value, const char* field) {
      if (!(value >= 0.0) || !std::isfinite(value)) {
        fail(std::string("rope_scaling.") + field + " must be finite and >= 0, got " + std::to_string(value));
      }
    };
    positive(rope.factor, "factor");
    positive(rope.beta_fast, "beta_fast");
    positive(rope.beta_slow, "beta_slow");
    non_negative(rope.mscale, "mscale");
    non_negative(rope.mscale_all_dim, "mscale_all_dim");
    if (rope.attention_factor) {
      positive(*rope.attention_factor, "attention_factor");
    }
    if (rope.original_max_position_embeddings < 1 || rope.original_max_position_embeddings > max_positions) {
      fail("rope_scaling.original_max_position_embeddings must be in [1, " + std::to_string(max_positions) +
           "], got " + std::to_string(rope.original_max_position_embeddings));
    }
  }
};

}  // namespace ngemb
