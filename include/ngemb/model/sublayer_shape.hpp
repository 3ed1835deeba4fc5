#pragma once
// Config -> shape: a block loads each sublayer with the sublayer's named-field shape, made from the model config by
// the customization point `sublayer_shape(const model_config&, std::type_identity<Shape>)`, found by argument-
// dependent lookup. ngemb provides it for its shared shapes; a user part reuses one of them or declares an overload
// next to its own shape struct (in the struct's namespace), and the blocks load it unchanged.
#include <concepts>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"

#include "ngemb/ffn/feed_forward.hpp"
#include "ngemb/model/attention.hpp"
#include "ngemb/model/mla_shape.hpp"
#include "ngemb/model/model_config.hpp"
#include "ngemb/moe/router.hpp"

namespace ngemb {

/// A dense FFN: the config's dense width.
inline ffn_shape sublayer_shape(const model_config& config, std::type_identity<ffn_shape> /*shape*/) {
  return {.hidden = config.hidden_size(), .intermediate = config.ffn_hidden_size};
}

/// A MoE layer (and its router): the expert width and the router options.
inline moe_shape sublayer_shape(const model_config& config, std::type_identity<moe_shape> /*shape*/) {
  return {.hidden = config.hidden_size(), .expert_width = config.expert_ffn_hidden_size, .router = config.router()};
}

/// GQA attention: the Llama head fields.
inline attention_shape sublayer_shape(const model_config& config, std::type_identity<attention_shape> /*shape*/) {
  return {.hidden = config.hidden_size(),
          .heads = config.num_attention_heads,
          .kv_heads = config.num_key_value_heads,
          .head_dim = config.head_dim,
          .rope_theta = config.rope_theta};
}

/// MLA attention: the MLA fields, the RoPE (theta and scaling) and the attention bias; invalid_argument when the
/// config has no MLA fields (a GQA config).
inline mla_shape sublayer_shape(const model_config& config, std::type_identity<mla_shape> /*shape*/) {
  if (!config.mla) {
    throw invalid_argument("sublayer_shape: an MLA attention needs the config fields kv_lora_rank, q_lora_rank, "
                           "qk_nope_head_dim, qk_rope_head_dim and v_head_dim, which this config (model_type \"" +
                           config.model_type + "\") does not have");
  }
  const mla_config& mla = *config.mla;
  return {.hidden = config.hidden_size(),
          .heads = config.num_attention_heads,
          .q_lora_rank = mla.q_lora_rank,
          .kv_lora_rank = mla.kv_lora_rank,
          .qk_nope_head_dim = mla.qk_nope_head_dim,
          .qk_rope_head_dim = mla.qk_rope_head_dim,
          .v_head_dim = mla.v_head_dim,
          .attention_bias = config.attention_bias,
          .scale_q_lora = mla.scale_q_lora,
          .scale_kv_lora = mla.scale_kv_lora,
          .rope_theta = config.rope_theta,
          .rope = config.rope};
}

namespace detail {

/// A part whose shape can be made from the config.
template <class Part>
concept shaped_by_config = requires(const model_config& config) {
  { sublayer_shape(config, std::type_identity<typename Part::shape>{}) } -> std::same_as<typename Part::shape>;
};

template <class Part>
constexpr bool check_shaped_by_config() {
  if constexpr (requires { typename Part::shape; }) {
    static_assert(shaped_by_config<Part>,
                  "decoder block: a sublayer's shape needs sublayer_shape(const model_config&, "
                  "std::type_identity<shape>) returning it, declared next to the shape struct");
  }
  return true;
}

/// Part::shape from the config, through the customization point.
template <class Part>
typename Part::shape shape_from_config(const model_config& config) {
  return sublayer_shape(config, std::type_identity<typename Part::shape>{});
}

}  // namespace detail

}  // namespace ngemb
