#pragma once
// LongCat-shaped model types written once over the policy, so a program names the policy (and the weight dtype)
// once instead of in every part:
//
//   using lm = ngemb::presets::longcat_shortcut<ngemb::device_policy>::model;
//   auto model = lm::load(ngemb::device_policy{stream}, "checkpoint/");
//
// Weight is the dtype of the n-gram tables and the routed experts (bf16, as LongCat-Flash-Lite ships them); the
// projections, attention, dense FFNs, router and norms run in fp32.
#include "ngemb/core/dtype.hpp"
#include "ngemb/embed/fused_projection.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/ffn/swiglu.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/model/attention.hpp"
#include "ngemb/model/blocks.hpp"
#include "ngemb/model/causal_lm.hpp"
#include "ngemb/moe/moe.hpp"
#include "ngemb/moe/router.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/store/table_store.hpp"

namespace ngemb::presets {

namespace detail {

/// The parts both LongCat block layouts share.
template <class Policy, class Weight>
struct longcat_parts {
  using policy_type = Policy;
  using hasher = longcat_hash;
  using store = table_store<Weight, Policy>;
  using embedding = ngram_embedding<hasher, store, fused_projection<float, Policy>>;
  using router = softmax_router<Policy>;
  using experts = moe<router, Weight>;
  using attention = ngemb::attention<Policy>;
};

}  // namespace detail

/// LongCat-Flash's shortcut-connected layers (shortcut_block): two attention and dense SwiGLU sublayers per layer,
/// with a MoE over the first one's normed input.
template <class Policy = host_policy, class Weight = bf16>
struct longcat_shortcut : detail::longcat_parts<Policy, Weight> {
  using parts = detail::longcat_parts<Policy, Weight>;
  using dense_ffn = swiglu<float, Policy>;
  using block = shortcut_block<typename parts::attention, dense_ffn, typename parts::experts>;
  using model = causal_lm<typename parts::embedding, block>;
};

/// The same parts in standard pre-norm layers (prenorm_block): attention, then the MoE.
template <class Policy = host_policy, class Weight = bf16>
struct longcat_prenorm : detail::longcat_parts<Policy, Weight> {
  using parts = detail::longcat_parts<Policy, Weight>;
  using block = prenorm_block<typename parts::attention, typename parts::experts>;
  using model = causal_lm<typename parts::embedding, block>;
};

}  // namespace ngemb::presets
