#pragma once
// Parameter counts and cache sizes of a model, from its model_config alone (no checkpoint): what examples/plan
// prints before anything is loaded. Counted as the HF layout stores them (LongCat's shortcut layer: two attention
// sublayers, two dense SwiGLU FFNs, one MoE and four RMSNorms per layer; SPEC §1 and §6):
//   n-gram tables       sum over the T = K*(N-1) sub-tables of m_i x d (SPEC §1), only with an n-gram embedding
//   n-gram projections  T x H x d (post_projs)
//   embedding           V x H (embed_tokens)
//   attention           MLA: q_a_proj (or q_proj), q_a_layernorm, q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm,
//                       kv_b_proj, o_proj (+ biases with attention_bias); GQA: q, k, v, o projections
//   dense FFNs          3 x H x ffn_hidden_size each
//   experts             E x 3 x H x expert_ffn_hidden_size per MoE (zero experts have no weights)
//   router              classifier (E+Z) x H (+ bias with router_bias) and e_score_correction_bias (E+Z)
//   norms               the four per layer and the final norm, H each
//   lm_head             V x H (LongCat does not tie it to the embedding)
// The MTP module is not described by config.json and is not counted.
// Overflow raises invalid_argument naming the part (validate()'s bounds do not rule it out for every product).
#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "ngemb/core/checked.hpp"
#include "ngemb/model/model_config.hpp"

namespace ngemb {

struct parameter_counts {
  std::uint64_t ngram_tables = 0;
  std::uint64_t ngram_projections = 0;
  std::uint64_t embedding = 0;
  std::uint64_t attention = 0;
  std::uint64_t dense_ffn = 0;
  std::uint64_t experts = 0;
  std::uint64_t router = 0;
  std::uint64_t norms = 0;
  std::uint64_t lm_head = 0;

  /// Everything but the n-gram tables and the experts: what every token's forward reads in full.
  [[nodiscard]] std::uint64_t dense() const {
    return sum("dense parameters", {ngram_projections, embedding, attention, dense_ffn, router, norms, lm_head});
  }
  [[nodiscard]] std::uint64_t total() const { return sum("all parameters", {ngram_tables, experts, dense()}); }

 private:
  static std::uint64_t sum(std::string_view what, std::initializer_list<std::uint64_t> parts) {
    std::uint64_t total = 0;
    for (const std::uint64_t part : parts) {
      total = checked_add(total, part, what);
    }
    return total;
  }
};

/// Attention sublayers of the whole model: LongCat's shortcut layer has two.
[[nodiscard]] inline std::uint64_t attention_sublayers(const model_config& config) {
  return checked_product("attention sublayers", config.num_layers, 2);
}

/// Parameters of one attention sublayer.
[[nodiscard]] inline std::uint64_t attention_parameters(const model_config& config) {
  const std::int64_t hidden = config.hidden_size();
  const auto product = [](auto... sizes) { return checked_product("attention parameters", sizes...); };
  const std::uint64_t bias = config.attention_bias ? 1 : 0;
  if (!config.mla) {
    const std::int64_t q = std::int64_t{config.num_attention_heads} * config.head_dim;
    const std::int64_t kv = std::int64_t{config.num_key_value_heads} * config.head_dim;
    return product(hidden, q + 2 * kv) + product(q, hidden) + bias * static_cast<std::uint64_t>(q + 2 * kv + hidden);
  }
  const mla_config& mla = *config.mla;
  const std::int64_t heads = config.num_attention_heads;
  const std::int64_t q_out = heads * mla.qk_head_dim();
  const std::uint64_t q_path = mla.q_lora_rank == 0
                                   ? product(q_out, hidden) + bias * static_cast<std::uint64_t>(q_out)
                                   : product(mla.q_lora_rank, hidden) + bias * static_cast<std::uint64_t>(mla.q_lora_rank) +
                                         static_cast<std::uint64_t>(mla.q_lora_rank) + product(q_out, mla.q_lora_rank);
  const std::int64_t kv_a = std::int64_t{mla.kv_lora_rank} + mla.qk_rope_head_dim;
  const std::uint64_t kv_path = product(kv_a, hidden) + bias * static_cast<std::uint64_t>(kv_a) +
                                static_cast<std::uint64_t>(mla.kv_lora_rank) +
                                product(heads * (mla.qk_nope_head_dim + mla.v_head_dim), mla.kv_lora_rank);
  const std::uint64_t output = product(hidden, heads * mla.v_head_dim) + bias * static_cast<std::uint64_t>(hidden);
  return q_path + kv_path + output;
}

/// Cache values per token of one attention sublayer: the latent c_kv and k_rope for MLA (kv_lora_rank +
/// qk_rope_head_dim), keys and values of every KV head for GQA.
[[nodiscard]] inline std::uint64_t cache_values_per_token(const model_config& config) {
  if (config.mla) {
    return static_cast<std::uint64_t>(config.mla->kv_lora_rank) + static_cast<std::uint64_t>(config.mla->qk_rope_head_dim);
  }
  return checked_product("cache values per token", 2, config.num_key_value_heads, config.head_dim);
}

[[nodiscard]] inline parameter_counts count_parameters(const model_config& config) {
  parameter_counts counts;
  const std::int64_t hidden = config.hidden_size();
  const std::int64_t vocab = config.vocab_size();
  const auto layers = static_cast<std::uint64_t>(config.num_layers);
  const auto times = [](std::uint64_t a, std::uint64_t b, std::string_view what) { return checked_mul(a, b, what); };
  if (config.has_ngram_embedding()) {
    const ngram_config& ngram = config.ngram;
    for (const std::int64_t rows : ngram.moduli()) {
      counts.ngram_tables = checked_add(counts.ngram_tables, checked_product("n-gram tables", rows, ngram.row_width()),
                                        "n-gram tables");
    }
    counts.ngram_projections = checked_product("n-gram projections", ngram.num_tables(), hidden, ngram.row_width());
  }
  counts.embedding = checked_product("embedding", vocab, hidden);
  counts.lm_head = counts.embedding;
  counts.attention = times(attention_sublayers(config), attention_parameters(config), "attention");
  counts.dense_ffn = times(layers, checked_product("dense FFNs", 2, 3, hidden, config.ffn_hidden_size), "dense FFNs");
  if (config.n_routed_experts > 0) {
    const std::uint64_t experts =
        checked_product("experts", config.n_routed_experts, 3, hidden, config.expert_ffn_hidden_size);
    counts.experts = times(layers, experts, "experts");
    const std::uint64_t all_experts = static_cast<std::uint64_t>(config.n_routed_experts) +
                                      static_cast<std::uint64_t>(config.zero_expert_num);
    const std::uint64_t router = checked_product("router", all_experts, hidden) +
                                 all_experts * (config.router_bias ? 2 : 1);
    counts.router = times(layers, router, "router");
  }
  counts.norms = checked_product("norms", config.num_layers * 4 + 1, hidden);
  return counts;
}

}  // namespace ngemb
