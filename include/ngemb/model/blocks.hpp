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
#include "ngemb/ffn/feed_forward.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/attention.hpp"
#include "ngemb/model/attention_layer.hpp"
#include "ngemb/model/detail/residual_ops.hpp"
#include "ngemb/model/model_config.hpp"
#include "ngemb/model/rms_norm.hpp"
#include "ngemb/model/stage_times.hpp"
#include "ngemb/model/sublayer_shape.hpp"
#include "ngemb/moe/moe.hpp"

namespace ngemb {

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

/// A sublayer of the block at `prefix`, with its shape from the config (sublayer_shape.hpp).
template <class Part, class Policy>
Part load_sublayer(const Policy& policy, const checkpoint& source, const std::string& prefix,
                   const model_config& config) {
  return Part::load(policy, source, prefix, shape_from_config<Part>(config));
}

template <class Ffn>
constexpr model_stage stage_of() {
  return moe_feed_forward<Ffn> ? model_stage::moe : model_stage::dense_ffn;
}

template <class Policy>
rms_norm<Policy> load_norm(const Policy& policy, const checkpoint& source, const std::string& prefix,
                           const model_config& config) {
  return rms_norm<Policy>::load(policy, source, prefix,
                                {.hidden = config.hidden_size(), .eps = static_cast<float>(config.rms_norm_eps)});
}

template <class Policy>
void add_residual(const Policy& policy, view<float> stream, const typename Policy::template buffer<float>& update) {
  for_each_n(policy, stream.size(), add_residual_op{stream.data(), update.data()});
}

/// h += attention(norm(h)), charged to the attention stage: the attention sublayer of every block kind.
template <class Attention, class Policy>
void add_attention(const Policy& policy, const rms_norm<Policy>& norm, Attention& attention,
                   typename Attention::cache_type& cache, int cache_layer, view<float> h, block_workspace<Policy>& work,
                   stage_clock<Policy>& clock) {
  const view<float> normed = work.normed.as_view().subview(0, h.size());
  norm.forward(policy, cache.step_tokens(), h, normed);
  attention.forward(policy, cache, cache_layer, normed, work.update.as_view().subview(0, h.size()));
  add_residual(policy, h, work.update);
  clock.mark(policy, model_stage::attention);
}

template <class Attention, class Ffn>
constexpr bool check_block_parts() {
  // The checks' own static_asserts name what is missing; the compiler's instantiation trace names the block.
  static_assert(check_attention_layer<Attention>());
  static_assert(check_feed_forward<Ffn>());
  static_assert(check_shaped_by_config<Attention>() && check_shaped_by_config<Ffn>());
  if constexpr (requires {
                  typename Attention::policy_type;
                  typename Ffn::policy_type;
                }) {
    static_assert(std::is_same_v<typename Attention::policy_type, typename Ffn::policy_type>,
                  "decoder block: attention and FFN must run under the same policy");
  }
  return true;
}

}  // namespace detail

/// h += attn(in(h)); h += ffn(post(h)).
template <class Attention, class Ffn>
class prenorm_block {
  static_assert(detail::check_block_parts<Attention, Ffn>());

 public:
  using policy_type = typename Attention::policy_type;
  using attention_type = Attention;
  using cache_type = typename Attention::cache_type;
  /// Blocks take their sublayers' shapes from the whole config.
  using shape = model_config;
  static constexpr int attention_sublayers = 1;

  prenorm_block(rms_norm<policy_type> input_norm, Attention attention, rms_norm<policy_type> post_norm, Ffn ffn)
      : input_norm_(std::move(input_norm)),
        attention_(std::move(attention)),
        post_norm_(std::move(post_norm)),
        ffn_(std::move(ffn)) {}

  /// The block at `prefix`, e.g. "model.layers.3".
  static prenorm_block load(const policy_type& policy, const checkpoint& source, const std::string& prefix,
                            const shape& config) {
    // Named steps, not call arguments, so a missing tensor is reported in checkpoint order on every compiler.
    auto input_norm = detail::load_norm(policy, source, prefix + ".input_layernorm", config);
    auto attention = detail::load_sublayer<Attention>(policy, source, prefix + ".self_attn", config);
    auto post_norm = detail::load_norm(policy, source, prefix + ".post_attention_layernorm", config);
    auto ffn = detail::load_sublayer<Ffn>(policy, source, prefix + ".mlp", config);
    return prenorm_block(std::move(input_norm), std::move(attention), std::move(post_norm), std::move(ffn));
  }

  void save(const policy_type& policy, const std::string& prefix, tensor_collection& out) const {
    input_norm_.save(policy, prefix + ".input_layernorm", out);
    attention_.save(policy, prefix + ".self_attn", out);
    post_norm_.save(policy, prefix + ".post_attention_layernorm", out);
    ffn_.save(policy, prefix + ".mlp", out);
  }

  /// h [tokens x H] in place, the tokens of the cache's begun step; this block's attention is cache layer
  /// `layer * attention_sublayers`.
  void forward(const policy_type& policy, cache_type& cache, int layer, view<float> h,
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
  static_assert(detail::check_moe_feed_forward<Moe>());
  static_assert(detail::check_shaped_by_config<Moe>());
  static_assert(std::is_same_v<typename Attention::policy_type, typename Moe::policy_type>,
                "shortcut_block: the MoE must run under the same policy as the attention");

 public:
  using policy_type = typename Attention::policy_type;
  using attention_type = Attention;
  using cache_type = typename Attention::cache_type;
  /// Blocks take their sublayers' shapes from the whole config.
  using shape = model_config;
  static constexpr int attention_sublayers = 2;

  shortcut_block(std::array<rms_norm<policy_type>, 2> input_norms, std::array<Attention, 2> attentions,
                 std::array<rms_norm<policy_type>, 2> post_norms, std::array<Ffn, 2> ffns, Moe moe)
      : input_norms_(std::move(input_norms)),
        attentions_(std::move(attentions)),
        post_norms_(std::move(post_norms)),
        ffns_(std::move(ffns)),
        moe_(std::move(moe)) {}

  /// The block at `prefix`, e.g. "model.layers.3".
  static shortcut_block load(const policy_type& policy, const checkpoint& source, const std::string& prefix,
                             const shape& config) {
    const auto norm = [&](const char* kind, int index) {
      return detail::load_norm(policy, source, prefix + kind + std::to_string(index), config);
    };
    const auto attention = [&](int index) {
      return detail::load_sublayer<Attention>(policy, source, prefix + ".self_attn." + std::to_string(index), config);
    };
    const auto ffn = [&](int index) {
      return detail::load_sublayer<Ffn>(policy, source, prefix + ".mlps." + std::to_string(index), config);
    };
    // Braced lists evaluate left to right, so a missing tensor is reported in checkpoint order.
    std::array<rms_norm<policy_type>, 2> input_norms{norm(".input_layernorm.", 0), norm(".input_layernorm.", 1)};
    std::array<Attention, 2> attentions{attention(0), attention(1)};
    std::array<rms_norm<policy_type>, 2> post_norms{norm(".post_attention_layernorm.", 0),
                                                    norm(".post_attention_layernorm.", 1)};
    std::array<Ffn, 2> ffns{ffn(0), ffn(1)};
    Moe moe = detail::load_sublayer<Moe>(policy, source, prefix + ".mlp", config);
    return shortcut_block(std::move(input_norms), std::move(attentions), std::move(post_norms), std::move(ffns),
                          std::move(moe));
  }

  void save(const policy_type& policy, const std::string& prefix, tensor_collection& out) const {
    for (int index = 0; index < 2; ++index) {
      const std::string suffix = std::to_string(index);
      const auto i = static_cast<std::size_t>(index);
      input_norms_[i].save(policy, prefix + ".input_layernorm." + suffix, out);
      attentions_[i].save(policy, prefix + ".self_attn." + suffix, out);
      post_norms_[i].save(policy, prefix + ".post_attention_layernorm." + suffix, out);
      ffns_[i].save(policy, prefix + ".mlps." + suffix, out);
    }
    moe_.save(policy, prefix + ".mlp", out);
  }

  /// h [tokens x H] in place, the tokens of the cache's begun step; this block's attentions are cache layers
  /// 2*layer and 2*layer+1.
  void forward(const policy_type& policy, cache_type& cache, int layer, view<float> h,
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

namespace detail {

template <class B>
concept names_block_types = requires {
  typename B::policy_type;
  typename B::attention_type;
  typename B::attention_type::cache_type;
  { B::attention_sublayers } -> std::convertible_to<int>;
};

template <class B>
concept loads_block = names_block_types<B> &&
    requires(const typename B::policy_type& policy, const checkpoint& source, const std::string& prefix,
             const model_config& config) {
      { B::load(policy, source, prefix, config) } -> std::same_as<B>;
    };

template <class B>
concept saves_block = names_block_types<B> &&
    requires(const B& block, const typename B::policy_type& policy, const std::string& prefix, tensor_collection& out) {
      block.save(policy, prefix, out);
    };

template <class B>
concept runs_block = names_block_types<B> &&
    requires(B& block, const typename B::policy_type& policy, typename B::attention_type::cache_type& cache,
             view<float> h, block_workspace<typename B::policy_type>& work,
             stage_clock<typename B::policy_type>& clock) { block.forward(policy, cache, 0, h, work, clock); };

}  // namespace detail

/// A decoder block over its attention's cache: policy_type, attention_type (an attention_layer, whose cache_type the
/// model holds), attention_sublayers (cache layers per block), static load(policy, const checkpoint&, prefix,
/// const model_config&), save(policy, prefix, tensor_collection&) and forward(policy, cache&, layer, h,
/// block_workspace&, stage_clock&) over the cache's begun step.
template <class B>
concept decoder_block = detail::names_block_types<B> && attention_layer<typename B::attention_type> &&
                        detail::loads_block<B> && detail::saves_block<B> && detail::runs_block<B>;

namespace detail {

/// One static_assert per member of decoder_block, for the owner (causal_lm) to call.
template <class B>
constexpr bool check_decoder_block() {
  static_assert(requires { typename B::policy_type; },
                "decoder_block: the block type must name its policy (using policy_type = ...)");
  static_assert(requires { typename B::attention_type; },
                "decoder_block: the block type must name its attention (using attention_type = ...), whose "
                "cache_type the model holds");
  if constexpr (requires { typename B::attention_type; }) {
    static_assert(check_attention_layer<typename B::attention_type>());
  }
  static_assert(requires { { B::attention_sublayers } -> std::convertible_to<int>; },
                "decoder_block: the block type must have static constexpr int attention_sublayers");
  static_assert(loads_block<B>,
                "decoder_block: the block type must have static load(policy, const checkpoint&, prefix, "
                "const model_config&) returning it");
  static_assert(saves_block<B>,
                "decoder_block: the block type must have save(policy, prefix, tensor_collection&) const");
  static_assert(runs_block<B>,
                "decoder_block: the block type must have forward(policy, cache_type&, layer, h, block_workspace&, "
                "stage_clock&)");
  return true;
}

}  // namespace detail

}  // namespace ngemb
