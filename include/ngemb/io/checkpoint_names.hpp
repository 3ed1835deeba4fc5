#pragma once
// Tensor names of an n-gram embedding in a checkpoint (SPEC §4, the Hugging Face LongCat names). A prefix selects
// the module, so per-layer embeddings (PLNE) reuse the same scheme under "model.layers.{l}.ngram_embeddings".
#include <string>

namespace ngemb {

struct ngram_tensor_names {
  /// The n-gram module: `{prefix}.embedders.{i}.weight`, `{prefix}.post_projs.{i}.weight`, `{prefix}.norm.*`.
  std::string prefix = "model.ngram_embeddings";
  /// The base table E_0 [V x H]; empty for a module without one (PLNE layers).
  std::string base = "model.embed_tokens.weight";

  [[nodiscard]] std::string embedder(int table) const { return prefix + ".embedders." + std::to_string(table) + ".weight"; }
  [[nodiscard]] std::string post_proj(int table) const { return prefix + ".post_projs." + std::to_string(table) + ".weight"; }
  /// LayerNorm amplification of the n-gram branch (an ngemb extension; the official module has none).
  [[nodiscard]] std::string norm_weight() const { return prefix + ".norm.weight"; }
  [[nodiscard]] std::string norm_bias() const { return prefix + ".norm.bias"; }

  /// The names of layer `layer`'s own tables and projections (PLNE).
  [[nodiscard]] static ngram_tensor_names per_layer(int layer) {
    return {"model.layers." + std::to_string(layer) + ".ngram_embeddings", ""};
  }
};

}  // namespace ngemb
