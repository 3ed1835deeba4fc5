#pragma once
// Tensor names of an n-gram embedding in a checkpoint (SPEC §4, the Hugging Face LongCat names). Every part takes
// the prefix of the smallest module holding its tensors and appends its own names: the embedding and its store
// take the owner's ("model", or "model.layers.{l}" for a per-layer embedding), since the base table sits beside
// the n-gram module; the projection takes the module's ("model.ngram_embeddings"), the LayerNorm amplification
// its norm's ("model.ngram_embeddings.norm").
#include <string>
#include <string_view>

namespace ngemb::ngram_names {

/// The owner of the released layout's embedding.
inline constexpr char released_owner[] = "model";

/// `{owner}.ngram_embeddings`: the n-gram module of a model or layer.
[[nodiscard]] inline std::string module(std::string_view owner) { return std::string(owner) + ".ngram_embeddings"; }
/// `{owner}.embed_tokens.weight`: the base table E_0 [V x H]; a per-layer embedding has none.
[[nodiscard]] inline std::string base_table(std::string_view owner) {
  return std::string(owner) + ".embed_tokens.weight";
}
/// `{module}.embedders.{i}.weight`: sub-table i [m_i x d].
[[nodiscard]] inline std::string embedder(std::string_view module, int table) {
  return std::string(module) + ".embedders." + std::to_string(table) + ".weight";
}
/// `{module}.post_projs.{i}.weight`: the projection of sub-table i [out x d].
[[nodiscard]] inline std::string post_proj(std::string_view module, int table) {
  return std::string(module) + ".post_projs." + std::to_string(table) + ".weight";
}
/// `{module}.norm`: the LayerNorm amplification of the n-gram branch (an ngemb extension; the official module has
/// none), with `.weight` and `.bias`.
[[nodiscard]] inline std::string norm(std::string_view module) { return std::string(module) + ".norm"; }
/// `model.layers.{l}`: the owner of layer l's own tables (PLNE).
[[nodiscard]] inline std::string layer(int index) { return "model.layers." + std::to_string(index); }

}  // namespace ngemb::ngram_names
