#pragma once
// Per-layer n-gram embedding (PLNE, SPEC §3): layer l has its own sub-tables E_i^(l) and projections W_i^(l) to
// the FFN width F, and uses e^(l) = (1/T) sum_i W_i^(l) E_i^(l)[id_i] inside a gated FFN,
//   y = W_d^(l) ( SiLU(W_a^(l) x) * e^(l) ).
// The ids depend only on the tokens, so one hash per step serves every layer:
//   plne.hash(policy, cache, slots, tokens);            // once per step
//   plne.embed(policy, layer, e);  ffn[layer].forward(policy, count, x, e, y);
// Checkpoint names (an ngemb convention; the released LongCat has no PLNE):
//   model.layers.{l}.ngram_embeddings.embedders.{i}.weight [m_i, d], .post_projs.{i}.weight [F, d],
//   model.layers.{l}.ngram_ffn.gate_proj.weight [F, H] (W_a), model.layers.{l}.ngram_ffn.down_proj.weight [H, F].
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/io/safetensors_reader.hpp"

namespace ngemb {

namespace detail {

/// g = SiLU(g) * e, elementwise; SiLU(z) = z / (1 + exp(-z)).
template <class Acc>
struct gate_op {
  Acc* gate;
  const Acc* embedding;

  NGEMB_HD void operator()(std::size_t index) const {
    const Acc z = gate[index];
    Acc sigmoid;
    if constexpr (std::is_same_v<Acc, float>) {
      sigmoid = 1.0f / (1.0f + ::expf(-z));
    } else {
      sigmoid = 1.0 / (1.0 + ::exp(-z));
    }
    gate[index] = z * sigmoid * embedding[index];
  }
};

}  // namespace detail

/// The FFN a PLNE layer feeds: y [n x H] = W_d ( SiLU(W_a x) * e ), W_a [F x H], W_d [H x F].
template <gemm_scalar Acc = float, class Policy = host_policy>
class ngram_gated_ffn {
 public:
  using accumulator = Acc;
  using policy_type = Policy;

  template <readable_element W>
  ngram_gated_ffn(const Policy& policy, std::int64_t hidden, std::int64_t width, view<const W> gate, view<const W> down)
      : hidden_(hidden), width_(width) {
    if (hidden < 1 || width < 1) {
      throw invalid_argument("ngram_gated_ffn: H and F must be >= 1, got " + std::to_string(hidden) + " and " +
                             std::to_string(width));
    }
    gate_ = widened(policy, "gate (W_a)", gate);
    down_ = widened(policy, "down (W_d)", down);
  }

  static ngram_gated_ffn load(const Policy& policy, const safetensors_checkpoint& checkpoint, int layer,
                              std::int64_t hidden, std::int64_t width) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".ngram_ffn.";
    const std::int64_t gate_shape[] = {width, hidden};
    const std::int64_t down_shape[] = {hidden, width};
    const auto gate = read_tensor_as<double>(checkpoint, prefix + "gate_proj.weight", gate_shape);
    const auto down = read_tensor_as<double>(checkpoint, prefix + "down_proj.weight", down_shape);
    return ngram_gated_ffn(policy, hidden, width, view<const double>(gate), view<const double>(down));
  }

  [[nodiscard]] std::int64_t hidden_size() const { return hidden_; }
  [[nodiscard]] std::int64_t width() const { return width_; }

  /// y [count x H] from x [count x H] and the layer's n-gram embedding e [count x F], all in policy memory.
  void forward(const Policy& policy, std::size_t count, view<const Acc> x, view<const Acc> e, view<Acc> y) {
    detail::check_output_size("ngram_gated_ffn: x", count, hidden_, x.size());
    detail::check_output_size("ngram_gated_ffn: e", count, width_, e.size());
    detail::check_output_size("ngram_gated_ffn: y", count, hidden_, y.size());
    const std::size_t width = static_cast<std::size_t>(width_);
    const std::size_t hidden = static_cast<std::size_t>(hidden_);
    if (gated_.size() < count * width) {
      gated_ = typename Policy::template buffer<Acc>(policy, count * width);
    }
    const view<Acc> gated = gated_.as_view().subview(0, count * width);
    gemm_nt(policy, count, width, hidden, x, gate_.as_view(), gated);
    for_each_n(policy, count * width, detail::gate_op<Acc>{gated.data(), e.data()});
    gemm_nt(policy, count, hidden, width, view<const Acc>(gated.data(), gated.size()), down_.as_view(), y);
  }

 private:
  template <class W>
  typename Policy::template buffer<Acc> widened(const Policy& policy, const char* what, view<const W> values) const {
    if (values.size() != static_cast<std::size_t>(hidden_ * width_)) {
      throw shape_mismatch(std::string("ngram_gated_ffn: ") + what + " has " + std::to_string(values.size()) +
                           " elements, expected " + std::to_string(hidden_) + " x " + std::to_string(width_));
    }
    std::vector<Acc> converted(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      converted[i] = detail::convert<Acc>(values[i]);
    }
    return upload(policy, view<const Acc>(converted));
  }

  std::int64_t hidden_;
  std::int64_t width_;
  typename Policy::template buffer<Acc> gate_;
  typename Policy::template buffer<Acc> down_;
  typename Policy::template buffer<Acc> gated_;
};

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

  /// Layers 0..num_layers-1 under the names above; F is read from the first projection's shape.
  static per_layer_ngram_embedding load(const policy_type& policy,
                                        const std::shared_ptr<const safetensors_checkpoint>& checkpoint,
                                        const ngram_config& config, int num_layers) {
    std::vector<layer> layers;
    for (int index = 0; index < num_layers; ++index) {
      const ngram_tensor_names names = ngram_tensor_names::per_layer(index);
      const std::int64_t width = checkpoint->info(names.post_proj(0)).shape.at(0);
      Store store = detail::load_store<Store>(policy, checkpoint, config, names);
      layers.push_back({std::move(store), Projection::load(policy, *checkpoint, config.num_tables(),
                                                           config.row_width(), width, names)});
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
  void hash(const policy_type& policy, ngram_cache<policy_type, Token>& cache, view<const std::int32_t> slots,
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
    const layer& chosen = layers_[static_cast<std::size_t>(layer_index)];
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
