#pragma once
// LongCat-shaped model types written once over the policy, so a program names the policy (and the weight dtype)
// once instead of in every part:
//
//   using lm = ngemb::presets::longcat_shortcut<ngemb::device_policy>::model;
//   auto model = lm::load(ngemb::device_policy{stream}, "checkpoint/");
//
// The released layouts, picked by config.json's model_type (examples/generate.cpp does):
//   longcat_flash_lite<Policy>  "longcat_flash_ngram": n-gram embedding, MLA shortcut blocks, MoE with zero experts
//   longcat_flash<Policy>       "longcat_flash": the same blocks under a plain [V x H] embedding
// and ngemb's own LongCat-shaped demo layouts with GQA attention (no model_type): longcat_shortcut, longcat_prenorm.
// Weight is the dtype of the embedding tables and the routed experts (bf16, as LongCat-Flash-Lite ships them).
// DenseWeight is the dtype of W_cat (the n-gram projections), the dense FFNs and the lm_head: fp32 by default (exact
// for any checkpoint), bf16 to read half the bytes per decode step (lossless for LongCat's bf16 checkpoints);
// activations and accumulation stay fp32. Attention, router and norms run in fp32; the MLA latent cache is fp32.
#include "ngemb/core/dtype.hpp"
#include "ngemb/embed/fused_projection.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/embed/plain_embedding.hpp"
#include "ngemb/ffn/swiglu.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/model/attention.hpp"
#include "ngemb/model/blocks.hpp"
#include "ngemb/model/causal_lm.hpp"
#include "ngemb/model/mla_attention.hpp"
#include "ngemb/model/mtp.hpp"
#include "ngemb/moe/moe.hpp"
#include "ngemb/moe/router.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/store/table_store.hpp"

namespace ngemb::presets {

namespace detail {

/// The parts both LongCat block layouts share.
template <class Policy, class Weight, class DenseWeight>
struct longcat_parts {
  using policy_type = Policy;
  using hasher = longcat_hash;
  using store = table_store<Weight, Policy>;
  using embedding = ngram_embedding<hasher, store, fused_projection<float, Policy, DenseWeight>>;
  using dense_ffn = swiglu<DenseWeight, Policy>;
  using router = softmax_router<Policy>;
  using experts = moe<router, Weight>;
  using attention = ngemb::attention<Policy>;
};

}  // namespace detail

/// LongCat-Flash's shortcut-connected layers (shortcut_block): two attention and dense SwiGLU sublayers per layer,
/// with a MoE over the first one's normed input.
template <class Policy = host_policy, class Weight = bf16, class DenseWeight = float>
struct longcat_shortcut : detail::longcat_parts<Policy, Weight, DenseWeight> {
  using parts = detail::longcat_parts<Policy, Weight, DenseWeight>;
  using dense_ffn = typename parts::dense_ffn;
  using block = shortcut_block<typename parts::attention, dense_ffn, typename parts::experts>;
  using model = causal_lm<typename parts::embedding, block, no_mtp, DenseWeight>;
};

/// The same parts in standard pre-norm layers (prenorm_block): attention, then the MoE.
template <class Policy = host_policy, class Weight = bf16, class DenseWeight = float>
struct longcat_prenorm : detail::longcat_parts<Policy, Weight, DenseWeight> {
  using parts = detail::longcat_parts<Policy, Weight, DenseWeight>;
  using block = prenorm_block<typename parts::attention, typename parts::experts>;
  using model = causal_lm<typename parts::embedding, block, no_mtp, DenseWeight>;
};

/// LongCat-Flash-Lite (model_type "longcat_flash_ngram"): the n-gram embedding, shortcut-connected layers with MLA
/// attention, and the one-layer MTP module (model.mtp.*, loaded when asked: load_options{.mtp = true}).
template <class Policy = host_policy, class Weight = bf16, class DenseWeight = float>
struct longcat_flash_lite : detail::longcat_parts<Policy, Weight, DenseWeight> {
  using parts = detail::longcat_parts<Policy, Weight, DenseWeight>;
  using attention = mla_attention<Policy>;
  using dense_ffn = typename parts::dense_ffn;
  using block = shortcut_block<attention, dense_ffn, typename parts::experts>;
  using mtp = mtp_module<attention, dense_ffn, Weight>;
  using model = causal_lm<typename parts::embedding, block, mtp, DenseWeight>;
};

/// LongCat-Flash (model_type "longcat_flash"): longcat_flash_lite's layers under a plain embedding.
template <class Policy = host_policy, class Weight = bf16, class DenseWeight = float>
struct longcat_flash : longcat_flash_lite<Policy, Weight, DenseWeight> {
  using lite = longcat_flash_lite<Policy, Weight, DenseWeight>;
  using embedding = plain_embedding<Weight, Policy>;
  using model = causal_lm<embedding, typename lite::block, typename lite::mtp, DenseWeight>;
};

}  // namespace ngemb::presets
