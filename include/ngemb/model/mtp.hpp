#pragma once
// LongCat-Flash's multi-token-prediction (MTP, "NextN") module: one dense decoder layer that turns the target's
// hidden row at position t and the embedding of token t+1 into a hidden row whose logits draft token t+2. It is the
// draft of speculative decoding (spec/): run it autoregressively, feeding its own output rows back as h.
//
// Wiring (SGLang python/sglang/srt/models/longcat_flash_nextn.py, LongcatFlashModelNextN.forward; vLLM
// vllm/model_executor/models/longcat_flash_mtp.py, LongCatMultiTokenPredictorLayer.forward), per row:
//   x   = eh_proj(cat(enorm(e_{t+1}), hnorm(h_t)))     the embedding half first, eh_proj [H x 2H], no bias
//   x  += self_attn(input_layernorm(x))                one attention sublayer (MLA in the released model) over the
//   x  += mlp(post_attention_layernorm(x))             module's own cache; a dense SwiGLU of width ffn_hidden_size
//   out = norm(x)                                      the module's own final norm
// draft logits = lm_head.weight * out: the target's lm_head weight (the checkpoint has no MTP head; SGLang "uses
// shared head and embed weights from target model"), without the target's final norm (out is already normed).
// h_t is what both engines capture from the target: the output of the target's final norm `model.norm` (SGLang's
// LogitsProcessor stores the hidden rows it multiplies with lm_head; vLLM's FlashModel.forward returns norm(h)),
// and for later draft steps the module's previous `out`. Every norm uses rms_norm_eps.
//
// Checkpoint names of the released checkpoint (the keys of both engines' rename tables), under prefix `model.mtp`:
//   {prefix}.embed_tokens.weight                      [V x H] the module's plain embedding (vLLM loads it; SGLang
//                                                      uses the target's embedding instead)
//   {prefix}.layers.0.enorm.m.weight                  [H]     (".m." as released)
//   {prefix}.layers.0.hnorm.m.weight                  [H]
//   {prefix}.layers.0.eh_proj.weight                  [H x 2H]
//   {prefix}.layers.0.input_layernorm.weight          [H]
//   {prefix}.layers.0.self_attn.*                     the attention's own names (MLA: q_a_proj, q_a_layernorm,
//                                                      q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj)
//   {prefix}.layers.0.post_attention_layernorm.weight [H]
//   {prefix}.layers.0.transformer_layer.mlp.{gate_proj,up_proj,down_proj}.weight
//   {prefix}.norm.weight                              [H] the final norm
// HF transformers has no MTP module and ignores these names (`_keys_to_ignore_on_load_unexpected = [r"model\.mtp.*"]`).
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/attention_layer.hpp"
#include "ngemb/model/blocks.hpp"
#include "ngemb/model/detail/row_checks.hpp"
#include "ngemb/model/detail/workspace.hpp"
#include "ngemb/model/model_config.hpp"
#include "ngemb/model/rms_norm.hpp"
#include "ngemb/model/stage_times.hpp"
#include "ngemb/model/sublayer_shape.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

/// causal_lm's MTP parameter when the model type has no MTP part: `model.mtp.*` tensors are then always ignored.
struct no_mtp {};

namespace detail {

/// Row r of eh_proj's input [rows x 2H]: the normed embedding row, then the normed hidden row.
struct concat_rows_op {
  const float* first;
  const float* second;
  float* out;
  std::size_t width;
  NGEMB_HD void operator()(std::size_t i) const {
    const std::size_t row = i / (2 * width);
    const std::size_t column = i % (2 * width);
    out[i] = column < width ? first[row * width + column] : second[row * width + column - width];
  }
};

/// out row r = table row tokens[r], widened to fp32; the ids were checked on the host.
template <class Weight>
struct embedding_rows_op {
  const Weight* table;
  const std::int32_t* tokens;
  float* out;
  std::size_t width;
  NGEMB_HD void operator()(std::size_t i) const {
    out[i] = static_cast<float>(table[static_cast<std::size_t>(tokens[i / width]) * width + i % width]);
  }
};

}  // namespace detail

/// The MTP module over its attention and dense FFN types (any attention_layer: GQA `attention<>` or
/// `mla_attention<>`); `Weight` is the storage type of the embedding table and eh_proj.
template <class Attention, class Ffn, class Weight = float>
class mtp_module {
  static_assert(detail::check_block_parts<Attention, Ffn>());
  static_assert(storage_type<Weight>, "mtp_module: Weight must be float, ngemb::bf16 or ngemb::fp16");

 public:
  using policy_type = typename Attention::policy_type;
  using attention_type = Attention;
  using ffn_type = Ffn;
  using weight_type = Weight;
  /// The module's own per-sequence state: one attention layer (cache layer 0).
  using cache_type = typename Attention::cache_type;
  using token_type = std::int32_t;
  using shape = model_config;
  static constexpr int attention_layers = 1;
  /// Where the released checkpoint keeps the module.
  static constexpr const char* released_prefix = "model.mtp";

  struct norms {
    rms_norm<policy_type> embedding;  ///< enorm
    rms_norm<policy_type> hidden;     ///< hnorm
    rms_norm<policy_type> input;      ///< input_layernorm
    rms_norm<policy_type> post;       ///< post_attention_layernorm
    rms_norm<policy_type> final;      ///< norm
  };

  /// `embedding` [V x H] and `eh_proj` [H x 2H] are host arrays.
  mtp_module(const policy_type& policy, view<const Weight> embedding, std::int64_t vocab_size, norms layer_norms,
             view<const Weight> eh_proj, Attention attention, Ffn ffn)
      : norms_(std::move(layer_norms)),
        attention_(std::move(attention)),
        ffn_(std::move(ffn)),
        hidden_(norms_.final.hidden()),
        vocab_size_(vocab_size) {
    if (vocab_size < 1) {
      throw invalid_argument("mtp_module: vocab_size must be >= 1, got " + std::to_string(vocab_size));
    }
    for (const rms_norm<policy_type>* norm : {&norms_.embedding, &norms_.hidden, &norms_.input, &norms_.post}) {
      if (norm->hidden() != hidden_) {
        throw shape_mismatch("mtp_module: every norm must be " + std::to_string(hidden_) + " wide (the final norm's "
                             "width), got one of " + std::to_string(norm->hidden()));
      }
    }
    detail::require_rows("mtp_module: embed_tokens [V x H]", static_cast<std::size_t>(vocab_size), hidden_,
                         embedding.size());
    detail::require_rows("mtp_module: eh_proj [H x 2H]", static_cast<std::size_t>(hidden_), 2 * hidden_,
                         eh_proj.size());
    embedding_ = upload(policy, embedding);
    eh_proj_ = upload(policy, eh_proj);
  }

  /// The module at `prefix` (released_prefix in LongCat checkpoints) with the sizes of the target's config; a
  /// missing or misshapen tensor throws naming it.
  static mtp_module load(const policy_type& policy, const checkpoint& source, const std::string& prefix,
                         const shape& config) {
    const std::string layer = prefix + ".layers.0";
    const std::int64_t hidden = config.hidden_size();
    const std::int64_t embedding_shape[] = {config.vocab_size(), hidden};
    const std::int64_t eh_proj_shape[] = {hidden, 2 * hidden};
    // Named steps in checkpoint order, so the first missing tensor is the one reported.
    const auto embedding = read_tensor_as<Weight>(source, prefix + ".embed_tokens.weight", embedding_shape);
    auto embedding_norm = detail::load_norm(policy, source, layer + ".enorm.m", config);
    auto hidden_norm = detail::load_norm(policy, source, layer + ".hnorm.m", config);
    const auto eh_proj = read_tensor_as<Weight>(source, layer + ".eh_proj.weight", eh_proj_shape);
    auto input_norm = detail::load_norm(policy, source, layer + ".input_layernorm", config);
    auto attention = detail::load_sublayer<Attention>(policy, source, layer + ".self_attn", config);
    auto post_norm = detail::load_norm(policy, source, layer + ".post_attention_layernorm", config);
    auto ffn = detail::load_sublayer<Ffn>(policy, source, layer + ".transformer_layer.mlp", config);
    auto final_norm = detail::load_norm(policy, source, prefix + ".norm", config);
    return mtp_module(policy, view<const Weight>(embedding), config.vocab_size(),
                      {std::move(embedding_norm), std::move(hidden_norm), std::move(input_norm), std::move(post_norm),
                       std::move(final_norm)},
                      view<const Weight>(eh_proj), std::move(attention), std::move(ffn));
  }

  /// Every parameter under the names load() reads.
  void save(const policy_type& policy, const std::string& prefix, tensor_collection& out) const {
    const std::string layer = prefix + ".layers.0";
    out.add<Weight>(policy, prefix + ".embed_tokens.weight", {vocab_size_, hidden_}, embedding_.as_view());
    norms_.embedding.save(policy, layer + ".enorm.m", out);
    norms_.hidden.save(policy, layer + ".hnorm.m", out);
    out.add<Weight>(policy, layer + ".eh_proj.weight", {hidden_, 2 * hidden_}, eh_proj_.as_view());
    norms_.input.save(policy, layer + ".input_layernorm", out);
    attention_.save(policy, layer + ".self_attn", out);
    norms_.post.save(policy, layer + ".post_attention_layernorm", out);
    ffn_.save(policy, layer + ".transformer_layer.mlp", out);
    norms_.final.save(policy, prefix + ".norm", out);
  }

  /// The module's cache for max_sequences sequences of max_positions tokens (one attention layer).
  static cache_type make_cache(const policy_type& policy, const shape& config, std::size_t max_sequences,
                               std::int64_t max_positions) {
    return Attention::make_cache(policy, detail::shape_from_config<Attention>(config), attention_layers,
                                 max_sequences, max_positions);
  }

  /// rows [tokens x H] (policy memory) = the module's embedding rows of `tokens` (host memory); invalid_argument
  /// for an id outside the vocabulary, before anything is written.
  void embed(const policy_type& policy, view<const token_type> tokens, view<float> rows) {
    detail::require_rows("mtp_module::embed: rows", tokens.size(), hidden_, rows.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || tokens[i] >= vocab_size_) {
        throw invalid_argument("mtp_module::embed: token " + std::to_string(i) + " is " + std::to_string(tokens[i]) +
                               ", outside the vocabulary [0, " + std::to_string(vocab_size_) + ")");
      }
    }
    const view<token_type> device_tokens = detail::workspace(policy, tokens_, tokens.size());
    copy_to(policy, tokens, device_tokens);
    for_each_n(policy, rows.size(),
               detail::embedding_rows_op<Weight>{embedding_.data(), device_tokens.data(), rows.data(),
                                                 static_cast<std::size_t>(hidden_)});
    synchronize(policy);  // the host token array may go away when this returns
  }

  /// The step begun on `cache` (cache.begin(policy, slots, sizes) first, cache.commit() after): row r of `hidden`
  /// is the target's final-normed hidden row h_t of a token at position t (or this module's previous output row),
  /// row r of `embedded` the embedding row of the token at t+1, and row r of `out` becomes the final-normed row
  /// whose lm_head logits draft the token at t+2; the attention runs at cache position t. All [step tokens x H]
  /// in policy memory; `out` may not alias the inputs.
  void forward(const policy_type& policy, cache_type& cache, view<const float> hidden, view<const float> embedded,
               view<float> out) {
    const std::size_t tokens = cache.step_tokens();
    detail::require_rows("mtp_module: the hidden rows", tokens, hidden_, hidden.size());
    detail::require_rows("mtp_module: the embedding rows", tokens, hidden_, embedded.size());
    detail::require_rows("mtp_module: out", tokens, hidden_, out.size());
    const auto width = static_cast<std::size_t>(hidden_);
    const std::size_t rows = tokens * width;
    work_.reserve(policy, rows);
    const view<float> normed_embedding = work_.normed.as_view().subview(0, rows);
    const view<float> normed_hidden = work_.update.as_view().subview(0, rows);
    const view<float> joined = detail::workspace(policy, joined_, 2 * rows);
    const view<float> stream = detail::workspace(policy, stream_, rows);
    norms_.embedding.forward(policy, tokens, embedded, normed_embedding);
    norms_.hidden.forward(policy, tokens, hidden, normed_hidden);
    for_each_n(policy, joined.size(),
               detail::concat_rows_op{normed_embedding.data(), normed_hidden.data(), joined.data(), width});
    gemm_nt(policy, tokens, width, 2 * width, view<const float>(joined), view<const Weight>(eh_proj_.as_view()),
            stream);

    stage_clock<policy_type> untimed(policy, nullptr);
    detail::add_attention(policy, norms_.input, attention_, cache, 0, stream, work_, untimed);
    const view<float> normed = work_.normed.as_view().subview(0, rows);
    norms_.post.forward(policy, tokens, view<const float>(stream), normed);
    ffn_.forward(policy, tokens, view<const float>(normed), work_.update.as_view().subview(0, rows));
    detail::add_residual(policy, stream, work_.update);
    norms_.final.forward(policy, tokens, view<const float>(stream), out);
  }

  [[nodiscard]] std::int64_t hidden_size() const { return hidden_; }
  [[nodiscard]] std::int64_t vocab_size() const { return vocab_size_; }
  [[nodiscard]] const Attention& attention() const { return attention_; }
  [[nodiscard]] const Ffn& ffn() const { return ffn_; }

 private:
  norms norms_;
  Attention attention_;
  Ffn ffn_;
  std::int64_t hidden_;
  std::int64_t vocab_size_;
  typename policy_type::template buffer<Weight> embedding_;  ///< [V x H]
  typename policy_type::template buffer<Weight> eh_proj_;    ///< [H x 2H]
  block_workspace<policy_type> work_;
  typename policy_type::template buffer<float> joined_;
  typename policy_type::template buffer<float> stream_;
  typename policy_type::template buffer<token_type> tokens_;
};

namespace detail {

template <class M>
concept names_mtp_types = requires {
  typename M::policy_type;
  typename M::cache_type;
};

template <class M>
concept loads_mtp = names_mtp_types<M> &&
    requires(const typename M::policy_type& policy, const checkpoint& source, const std::string& prefix,
             const model_config& config) {
      { M::load(policy, source, prefix, config) } -> std::same_as<M>;
    };

template <class M>
concept saves_mtp = names_mtp_types<M> &&
    requires(const M& part, const typename M::policy_type& policy, const std::string& prefix, tensor_collection& out) {
      part.save(policy, prefix, out);
    };

}  // namespace detail

/// What causal_lm asks of its MTP part: policy_type, cache_type, static load(policy, const checkpoint&, prefix,
/// const model_config&) and save(policy, prefix, tensor_collection&) const. (The drafter of spec/ asks for more.)
template <class M>
concept mtp_part = detail::loads_mtp<M> && detail::saves_mtp<M>;

namespace detail {

/// One static_assert per member of mtp_part, for causal_lm to call; no_mtp passes.
template <class M>
constexpr bool check_mtp_part() {
  if constexpr (!std::is_same_v<M, no_mtp>) {
    static_assert(requires { typename M::policy_type; },
                  "mtp_part: the MTP type must name its policy (using policy_type = ...)");
    static_assert(requires { typename M::cache_type; },
                  "mtp_part: the MTP type must name the cache it runs over (using cache_type = ...)");
    static_assert(loads_mtp<M>,
                  "mtp_part: the MTP type must have static load(policy, const checkpoint&, prefix, "
                  "const model_config&) returning it");
    static_assert(saves_mtp<M>, "mtp_part: the MTP type must have save(policy, prefix, tensor_collection&) const");
  }
  return true;
}

}  // namespace detail

}  // namespace ngemb
