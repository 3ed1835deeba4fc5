#pragma once
// The sizes of a Multi-head Latent Attention sublayer (LongCat-Flash's, after DeepSeek-V2/V3), with the HF config
// field names. model/mla_attention.hpp holds the layer; sublayer_shape.hpp makes this shape from a model_config.
#include <cstdint>

#include "ngemb/model/rope_scaling.hpp"

namespace ngemb {

struct mla_shape {
  std::int64_t hidden;   ///< H
  int heads;             ///< num_attention_heads
  int q_lora_rank;       ///< 0: config.json's null, a single q_proj [heads*(nope+rope) x H]
  int kv_lora_rank;      ///< the latent c_kv's width
  int qk_nope_head_dim;  ///< per-head key/query width without RoPE
  int qk_rope_head_dim;  ///< the shared rotary key's width (even)
  int v_head_dim;        ///< per-head value width
  bool attention_bias = false;  ///< biases on q_a_proj (or q_proj), kv_a_proj_with_mqa and o_proj
  bool scale_q_lora = true;     ///< query times sqrt(H / q_lora_rank) (`mla_scale_q_lora`)
  bool scale_kv_lora = true;    ///< normed latent times sqrt(H / kv_lora_rank) (`mla_scale_kv_lora`)
  double rope_theta = 10000.0;
  rope_scaling rope = {};
  /// q_a_layernorm and kv_a_layernorm: transformers builds them with RMSNorm's default eps, not rms_norm_eps.
  float latent_norm_eps = 1e-6f;

  [[nodiscard]] int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool operator==(const mla_shape&) const = default;
};

}  // namespace ngemb
