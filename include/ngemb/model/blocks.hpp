#pragma once
// Decoder blocks: a standard pre-norm block (attention, then a dense or MoE FFN) and LongCat-Flash's
// shortcut-connected block (SPEC §6). A block is a type over its sublayer types; sizes come from the model config.
//
// Checkpoint names (HF LongCat-Flash where they exist, Llama otherwise), under `model.layers.{l}`:
//   pre-norm:  input_layernorm.weight, self_attn.*, post_attention_layernorm.weight, mlp.*
//   shortcut:  input_layernorm.{0,1}.weight, post_attention_layernorm.{0,1}.weight, self_attn.{0,1}.*,
//              mlps.{0,1}.* (dense SwiGLU), mlp.* (the MoE: router.*, experts.{e}.*)
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/attention.hpp"
#include "ngemb/model/detail/residual_ops.hpp"
#include "ngemb/model/kv_cache.hpp"
#include "ngemb/model/model_config.hpp"
#include "ngemb/model/rms_norm.hpp"
#include "ngemb/model/stage_times.hpp"

namespace ngemb {

/// A self-attention sublayer over a KV cache.
template <class A>
concept attention_layer = requires { typename A::policy_type; } &&
    requires(A& layer, const A& constant, const typename A::policy_type& policy, kv_cache<typename A::policy_type>& cache,
             view<const float> x, view<float> out, tensor_collection& collection) {
      layer.forward(policy, cache, 0, x, out);
      constant.save(policy, std::string(), collection);
    };

/// A position-wise FFN (dense SwiGLU, or a MoE layer): y = f(x) over [tokens x H].
template <class F>
concept feed_forward = requires { typename F::policy_type; } &&
    requires(F& layer, const F& constant, const typename F::policy_type& policy, std::size_t tokens,
             view<const float> x, view<float> y, tensor_collection& collection) {
      layer.forward(policy, tokens, x, y);
      constant.save(policy, std::string(), collection);
    };

/// A MoE FFN: a feed_forward that routes (loaded with the config's router options and expert width).
template <class F>
concept moe_feed_forward = feed_forward<F> && requires(const F& layer) { layer.router(); };

/// Scratch rows shared by every block of a model (one forward at a time).
template <class Policy>
struct block_workspace {
  typename Policy::template buffer<float> normed;
  typename Policy::template buffer<float> update;
  typename Policy::template buffer<float> shortcut;

  void reserve(const Policy& policy, std::size_t elements) {
    for (auto* buffer : {&normed, &update, &shortcut}) {
      if (buffer->size() < elements) {
        *buffer = typename Policy::template buffer<float>(policy, elements);
      }
    }
  }
};

namespace detail {

template <class Attention, class Policy>
Attention load_attention(const Policy& policy, const checkpoint& checkpoint, const std::string& prefix,
                         const model_config& config) {
  const typename Attention::shape shape{config.hidden_size(), config.num_attention_heads, config.num_key_value_heads,
                                        config.head_dim, config.rope_theta};
  return Attention::load(policy, checkpoint, prefix, shape);
}

/// A MoE FFN takes the router options and the expert width, a dense one the dense width.
template <class Ffn, class Policy>
Ffn load_feed_forward(const Policy& policy, const checkpoint& checkpoint, const std::string& prefix,
                      const model_config& config) {
  if constexpr (moe_feed_forward<Ffn>) {
    return Ffn::load(policy, checkpoint, prefix, config.router(), config.hidden_size(), config.expert_ffn_hidden_size);
  } else {
    return Ffn::load(policy, checkpoint, prefix, config.hidden_size(), config.ffn_hidden_size);
  }
}

template <class Ffn>
constexpr model_stage stage_of() {
  return moe_feed_forward<Ffn> ? model_stage::moe : model_stage::dense_ffn;
}

inline std::string layer_prefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }

template <class Policy>
rms_norm<Policy> load_norm(const Policy& policy, const checkpoint& checkpoint, const std::string& name,
                           const model_config& config) {
  return rms_norm<Policy>::load(policy, checkpoint, name, config.hidden_size(), static_cast<float>(config.rms_norm_eps));
}

template <class Policy>
void add_residual(const Policy& policy, view<float> stream, const typename Policy::template buffer<float>& update) {
  for_each_n(policy, stream.size(), add_residual_op{stream.data(), update.data()});
}

/// h += attention(norm(h)), charged to the attention stage: the attention sublayer of every block kind.
template <class Attention, class Policy>
void add_attention(const Policy& policy, const rms_norm<Policy>& norm, Attention& attention, kv_cache<Policy>& cache,
                   int cache_layer, view<float> h, block_workspace<Policy>& work, stage_clock<Policy>& clock) {
  const view<float> normed = work.normed.as_view().subview(0, h.size());
  norm.forward(policy, cache.step_tokens(), h, normed);
  attention.forward(policy, cache, cache_layer, normed, work.update.as_view().subview(0, h.size()));
  add_residual(policy, h, work.update);
  clock.mark(policy, model_stage::attention);
}

template <class Attention, class Ffn>
constexpr bool check_block_parts() {
  static_assert(attention_layer<Attention>,
                "decoder block: the attention type must be an ngemb attention layer: policy_type, "
                "forward(policy, kv_cache&, layer, x, out) and save(policy, prefix, tensor_collection&)");
  static_assert(feed_forward<Ffn>, "decoder block: the FFN type must model ngemb::feed_forward: policy_type, "
                                   "forward(policy, tokens, x, y) and save(policy, prefix, tensor_collection&) "
                                   "(a MoE layer also needs router())");
  static_assert(std::is_same_v<typename Attention::policy_type, typename Ffn::policy_type>,
                "decoder block: attention and FFN must run under the same policy");
  return true;
}

}  // namespace detail

/// h += attn(in(h)); h += ffn(post(h)).
template <class Attention, class Ffn>
class prenorm_block {
  static_assert(detail::check_block_parts<Attention, Ffn>());

 public:
  using policy_type = typename Attention::policy_type;
  static constexpr int attention_sublayers = 1;

  prenorm_block(rms_norm<policy_type> input_norm, Attention attention, rms_norm<policy_type> post_norm, Ffn ffn)
      : input_norm_(std::move(input_norm)),
        attention_(std::move(attention)),
        post_norm_(std::move(post_norm)),
        ffn_(std::move(ffn)) {}

  static prenorm_block load(const policy_type& policy, const checkpoint& checkpoint, int layer,
                            const model_config& config) {
    // Named steps, not call arguments, so a missing tensor is reported in checkpoint order on every compiler.
    const std::string prefix = detail::layer_prefix(layer);
    auto input_norm = detail::load_norm(policy, checkpoint, prefix + "input_layernorm.weight", config);
    auto attention = detail::load_attention<Attention>(policy, checkpoint, prefix + "self_attn", config);
    auto post_norm = detail::load_norm(policy, checkpoint, prefix + "post_attention_layernorm.weight", config);
    auto ffn = detail::load_feed_forward<Ffn>(policy, checkpoint, prefix + "mlp", config);
    return prenorm_block(std::move(input_norm), std::move(attention), std::move(post_norm), std::move(ffn));
  }

  void save(const policy_type& policy, int layer, tensor_collection& out) const {
    const std::string prefix = detail::layer_prefix(layer);
    input_norm_.save(policy, prefix + "input_layernorm.weight", out);
    attention_.save(policy, prefix + "self_attn", out);
    post_norm_.save(policy, prefix + "post_attention_layernorm.weight", out);
    ffn_.save(policy, prefix + "mlp", out);
  }

  /// h [tokens x H] in place, the tokens of the cache's begun step; this block's attention is cache layer
  /// `layer * attention_sublayers`.
  void forward(const policy_type& policy, kv_cache<policy_type>& cache, int layer, view<float> h,
               block_workspace<policy_type>& work, stage_clock<policy_type>& clock) {
    const std::size_t tokens = cache.step_tokens();
    const view<const float> stream(h.data(), h.size());
    const view<float> normed = work.normed.as_view().subview(0, h.size());
    const view<float> update = work.update.as_view().subview(0, h.size());
    detail::add_attention(policy, input_norm_, attention_, cache, layer * attention_sublayers, h, work, clock);
    post_norm_.forward(policy, tokens, stream, normed);
    ffn_.forward(policy, tokens, normed, update);
    detail::add_residual(policy, h, work.update);
    clock.mark(policy, detail::stage_of<Ffn>());
  }

  [[nodiscard]] const Ffn& ffn() const { return ffn_; }

 private:
  rms_norm<policy_type> input_norm_;
  Attention attention_;
  rms_norm<policy_type> post_norm_;
  Ffn ffn_;
};

/// LongCat-Flash's shortcut-connected layer (SPEC §6): the MoE reads the first dense FFN's normed input and its
/// output joins the stream only at the end, so it can overlap the second attention and FFN.
template <class Attention, class Ffn, class Moe>
class shortcut_block {
  static_assert(detail::check_block_parts<Attention, Ffn>());
  static_assert(moe_feed_forward<Moe>, "shortcut_block: the Moe type must be a MoE layer (feed_forward with router())");
  static_assert(std::is_same_v<typename Attention::policy_type, typename Moe::policy_type>,
                "shortcut_block: the MoE must run under the same policy as the attention");

 public:
  using policy_type = typename Attention::policy_type;
  static constexpr int attention_sublayers = 2;

  shortcut_block(std::array<rms_norm<policy_type>, 2> input_norms, std::array<Attention, 2> attentions,
                 std::array<rms_norm<policy_type>, 2> post_norms, std::array<Ffn, 2> ffns, Moe moe)
      : input_norms_(std::move(input_norms)),
        attentions_(std::move(attentions)),
        post_norms_(std::move(post_norms)),
        ffns_(std::move(ffns)),
        moe_(std::move(moe)) {}

  static shortcut_block load(const policy_type& policy, const checkpoint& checkpoint, int layer,
                             const model_config& config) {
    const std::string prefix = detail::layer_prefix(layer);
    const auto norm = [&](const char* kind, int index) {
      return detail::load_norm(policy, checkpoint, prefix + kind + std::to_string(index) + ".weight", config);
    };
    const auto attention = [&](int index) {
      return detail::load_attention<Attention>(policy, checkpoint, prefix + "self_attn." + std::to_string(index),
                                               config);
    };
    const auto ffn = [&](int index) {
      return detail::load_feed_forward<Ffn>(policy, checkpoint, prefix + "mlps." + std::to_string(index), config);
    };
    // Braced lists evaluate left to right, so a missing tensor is reported in checkpoint order.
    std::array<rms_norm<policy_type>, 2> input_norms{norm("input_layernorm.", 0), norm("input_layernorm.", 1)};
    std::array<Attention, 2> attentions{attention(0), attention(1)};
    std::array<rms_norm<policy_type>, 2> post_norms{norm("post_attention_layernorm.", 0),
                                                    norm("post_attention_layernorm.", 1)};
    std::array<Ffn, 2> ffns{ffn(0), ffn(1)};
    Moe moe = detail::load_feed_forward<Moe>(policy, checkpoint, prefix + "mlp", config);
    return shortcut_block(std::move(input_norms), std::move(attentions), std::move(post_norms), std::move(ffns),
                          std::move(moe));
  }

  void save(const policy_type& policy, int layer, tensor_collection& out) const {
    const std::string prefix = detail::layer_prefix(layer);
    for (int index = 0; index < 2; ++index) {
      const std::string suffix = std::to_string(index);
      const auto i = static_cast<std::size_t>(index);
      input_norms_[i].save(policy, prefix + "input_layernorm." + suffix + ".weight", out);
      attentions_[i].save(policy, prefix + "self_attn." + suffix, out);
      post_norms_[i].save(policy, prefix + "post_attention_layernorm." + suffix + ".weight", out);
      ffns_[i].save(policy, prefix + "mlps." + suffix, out);
    }
    moe_.save(policy, prefix + "mlp", out);
  }

  /// h [tokens x H] in place, the tokens of the cache's begun step; this block's attentions are cache layers
  /// 2*layer and 2*layer+1.
  void forward(const policy_type& policy, kv_cache<policy_type>& cache, int layer, view<float> h,
               block_workspace<policy_type>& work, stage_clock<policy_type>& clock) {
    const std::size_t tokens = cache.step_tokens();
    const view<const float> stream(h.data(), h.size());
    const view<float> normed = work.normed.as_view().subview(0, h.size());
    const view<float> update = work.update.as_view().subview(0, h.size());
    const view<float> shortcut = work.shortcut.as_view().subview(0, h.size());
    const int first_attention = layer * attention_sublayers;

    detail::add_attention(policy, input_norms_[0], attentions_[0], cache, first_attention, h, work, clock);

    post_norms_[0].forward(policy, tokens, stream, normed);
    moe_.forward(policy, tokens, normed, shortcut);
    clock.mark(policy, model_stage::moe);
    ffns_[0].forward(policy, tokens, normed, update);
    detail::add_residual(policy, h, work.update);
    clock.mark(policy, model_stage::dense_ffn);

    detail::add_attention(policy, input_norms_[1], attentions_[1], cache, first_attention + 1, h, work, clock);

    post_norms_[1].forward(policy, tokens, stream, normed);
    ffns_[1].forward(policy, tokens, normed, update);
    for_each_n(policy, h.size(), detail::add_two_residuals_op{h.data(), update.data(), shortcut.data()});
    clock.mark(policy, model_stage::dense_ffn);
  }

  [[nodiscard]] const Moe& moe() const { return moe_; }

 private:
  std::array<rms_norm<policy_type>, 2> input_norms_;
  std::array<Attention, 2> attentions_;
  std::array<rms_norm<policy_type>, 2> post_norms_;
  std::array<Ffn, 2> ffns_;
  Moe moe_;
};

}  // namespace ngemb
