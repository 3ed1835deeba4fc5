#pragma once
// Per-layer n-gram embedding (PLNE, SPEC §3): layer l has its own sub-tables E_i^(l) and projections W_i^(l) to
// the FFN width F, and uses e^(l) = (1/T) sum_i W_i^(l) E_i^(l)[id_i] inside a gated FFN,
//   y = W_d^(l) ( SiLU(W_a^(l) x) * e^(l) ).
// The ids depend only on the tokens, so one hash per step serves every layer:
//   plne.hash(policy, cache, slots, tokens);            // once per step
//   plne.embed(policy, layer, e);  ffn[layer].forward(policy, count, x, e, y);     // ffn/ngram_gated_ffn.hpp
// Checkpoint names (an ngemb convention; the released LongCat has no PLNE):
//   model.layers.{l}.ngram_embeddings.embedders.{i}.weight [m_i, d], .post_projs.{i}.weight [F, d].
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/checkpoint_names.hpp"

namespace ngemb {

template <class Hasher, class Store, class Projection = fused_projection<float, typename Store::policy_type>>
class per_layer_ngram_embedding {
  static_assert(detail::check_embedding_types<Hasher, Store, Projection>());

 public:
  using policy_type = typename Store::policy_type;
  using accumulator = typename Projection::accumulator;

  struct layer {
    Store store;
    Projection projection;
  };

  /// Every layer's tables must match the config's hash and have no base table; all project to the same width F.
  per_layer_ngram_embedding(const ngram_config& config, std::vector<layer> layers)
      : config_(config), hasher_(config), layers_(std::move(layers)) {
    if (layers_.empty()) {
      throw invalid_argument("per_layer_ngram_embedding: needs at least one layer");
    }
    for (std::size_t index = 0; index < layers_.size(); ++index) {
      const std::string who = "per_layer_ngram_embedding: layer " + std::to_string(index);
      detail::check_embedding_parts(who.c_str(), hasher_, layers_[index].store, layers_[index].projection);
      if (layers_[index].store.has_base()) {
        throw invalid_argument(who + ": a per-layer store has no base table");
      }
      if (layers_[index].projection.output_width() != width()) {
        throw shape_mismatch(who + " projects to " + std::to_string(layers_[index].projection.output_width()) +
                             " values, layer 0 to " + std::to_string(width()));
      }
    }
  }

  /// Layers 0..num_layers-1, layer l under the owner prefix `ngram_names::layer(l)`; F is read from the first
  /// projection's shape. The stores may keep `source` alive.
  static per_layer_ngram_embedding load(const policy_type& policy, const std::shared_ptr<const checkpoint>& source,
                                        const ngram_config& config, int num_layers) {
    std::vector<layer> layers;
    for (int index = 0; index < num_layers; ++index) {
      const std::string owner = ngram_names::layer(index);
      const std::string module = ngram_names::module(owner);
      const std::int64_t width = source->info(ngram_names::post_proj(module, 0)).shape.at(0);
      Store store = Store::load(policy, source, owner, config);
      layers.push_back({std::move(store), Projection::load(policy, *source, module,
                                                           typename Projection::shape(projection_shape{
                                                               .num_tables = config.num_tables(),
                                                               .row_width = config.row_width(),
                                                               .output_width = width}))});
    }
    return per_layer_ngram_embedding(config, std::move(layers));
  }

  [[nodiscard]] int num_layers() const { return static_cast<int>(layers_.size()); }
  /// F: values per token of e^(l).
  [[nodiscard]] std::int64_t width() const { return layers_.front().projection.output_width(); }
  [[nodiscard]] const Hasher& hasher() const { return hasher_; }

  /// Hashes a step's tokens for all layers (every sequence starts its stream).
  template <std::integral Token>
  void hash(const policy_type& policy, ragged_view<const Token> tokens) {
    hash_tokens(policy, hasher_, tokens, ids_for(policy, tokens.num_values()));
  }
  template <std::integral Token>
  void hash(const policy_type& policy, ragged_view<const Token> tokens, ragged_view<const Token> context) {
    hash_tokens(policy, hasher_, tokens, context, ids_for(policy, tokens.num_values()));
  }
  /// With the cache's windows as look-back; the cache is not changed.
  template <std::integral Token>
  void hash(const policy_type& policy, ngram_cache<Token, policy_type>& cache, view<const std::int32_t> slots,
            ragged_view<const Token> tokens) {
    hash_tokens(policy, hasher_, cache, slots, tokens, ids_for(policy, tokens.num_values()));
  }

  /// e^(l) [tokens x F] of the tokens given to the last hash().
  template <output_element Out>
  void embed(const policy_type& policy, int layer_index, view<Out> out) {
    if (layer_index < 0 || layer_index >= num_layers()) {
      throw invalid_argument("per_layer_ngram_embedding: layer " + std::to_string(layer_index) + " is outside [0, " +
                             std::to_string(num_layers()) + ")");
    }
    detail::check_output_size("per_layer_ngram_embedding::embed", hashed_tokens_, width(), out.size());
    layer& chosen = layers_[static_cast<std::size_t>(layer_index)];
    detail::embed_hashed(policy, chosen.store, chosen.projection, no_amplification{}, hashed_tokens_,
                         static_cast<const std::int32_t*>(nullptr), workspace_, out);
  }

 private:
  view<std::uint32_t> ids_for(const policy_type& policy, std::size_t tokens) {
    hashed_tokens_ = tokens;
    return workspace_type::template ensure<std::uint32_t>(policy, workspace_.ids,
                                                          tokens * static_cast<std::size_t>(hasher_.num_tables()));
  }

  using workspace_type = detail::embedding_workspace<policy_type, accumulator>;

  ngram_config config_;
  Hasher hasher_;
  std::vector<layer> layers_;
  workspace_type workspace_;
  std::size_t hashed_tokens_ = 0;
};

}  // namespace ngemb
