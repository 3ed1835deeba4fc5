#pragma once
// Multi-head Latent Attention (DeepSeek-V2/V3, LongCat-Flash), as transformers 5.23's LongcatFlashMLA computes it
// (models/longcat_flash/modeling_longcat_flash.py), over a latent cache (model/latent_cache.hpp):
//   q      = q_b_proj(q_a_layernorm(q_a_proj(x)))  or q_proj(x) when q_lora_rank = 0 (DeepseekV3Attention's path:
//            transformers' LongcatFlashMLA has none; q_proj has no bias there, and no LoRA scaling applies)
//   q     *= sqrt(H / q_lora_rank)                 (scale_q_lora; the nope and the rope part)
//   c, kr  = split(kv_a_proj_with_mqa(x), [kv_lora_rank, rope])
//   c      = kv_a_layernorm(c) * sqrt(H / kv_lora_rank)   (scale_kv_lora; eps latent_norm_eps = 1e-6)
//   q_rope, kr rotated with the interleaved pairing (rotary.hpp: interleaved_rotary, default or YaRN frequencies,
//            cos and sin times the attention factor); the cache keeps c and kr of every position
//   k_nope, v = split per head(kv_b_proj(c), [nope, v]);  k = [k_nope, kr] shared by all heads
//   out    = o_proj(softmax(q . k * qk_head_dim^-0.5 * rope.softmax_scale_factor()) v)
// The LoRA scalings default to on, as transformers applies them unconditionally (its checkpoints carry no flags;
// other loaders that default them to off read mla_scale_q_lora / mla_scale_kv_lora = false from config.json).
//
// Two forms compute the same attention:
//   absorbed  kv_b_proj's K half is folded into the query (q_latent = q_nope W_K, per head) so scores are
//             q_latent . c + q_rope . kr straight off the cache; the weighted sum of c goes through the V half
//             afterwards (FlashMLA, DeepSeek's inference). Per sequence both are GEMMs over its cache rows, whose
//             A is the rows (token, head) of [q_latent, q_rope]: scores = Q C^T (k = latent + rope), then the
//             online softmax, then sum = P C[:, :latent] (gemm_nn, B's rows latent + rope apart), chunk by chunk
//             so the host reads each cache row from memory once (a chunk stays in L2 between its two GEMMs).
//             Splits of the positions run on separate threads and merge by log-sum-exp: decode.
//   expanded  kv_b_proj expands k_nope and v of every attended position once per step, then plain attention:
//             cheaper when a step's tokens share most of their positions (prefill).
// mla_form::automatic picks expanded when the step's tokens are at least a quarter of the positions it attends
// over, absorbed otherwise; set_form pins one (tests run both).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/attention_layer.hpp"
#include "ngemb/model/detail/mla_ops.hpp"
#include "ngemb/model/detail/row_checks.hpp"
#include "ngemb/model/detail/workspace.hpp"
#include "ngemb/model/latent_cache.hpp"
#include "ngemb/model/mla_shape.hpp"
#include "ngemb/model/rms_norm.hpp"
#include "ngemb/model/rotary.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

enum class mla_form { automatic, absorbed, expanded };

/// Parameters as host arrays in the PyTorch [out x in] layout; Q = q_lora_rank, L = kv_lora_rank, R = rope,
/// qk = heads * (nope + rope). A view a shape does not use stays empty.
struct mla_weights {
  view<const float> q_a_proj;                 ///< [Q x H], q_lora_rank > 0
  view<const float> q_a_proj_bias;            ///< [Q], q_lora_rank > 0 and attention_bias
  view<const float> q_a_layernorm;            ///< [Q], q_lora_rank > 0
  view<const float> q_b_proj;                 ///< [qk x Q], q_lora_rank > 0
  view<const float> q_proj;                   ///< [qk x H], q_lora_rank = 0 (no bias, as DeepSeek-V3's)
  view<const float> kv_a_proj_with_mqa;       ///< [(L + R) x H]
  view<const float> kv_a_proj_with_mqa_bias;  ///< [L + R], attention_bias
  view<const float> kv_a_layernorm;           ///< [L]
  view<const float> kv_b_proj;                ///< [heads * (nope + v) x L]
  view<const float> o_proj;                   ///< [H x heads * v]
  view<const float> o_proj_bias;              ///< [H], attention_bias
};


namespace detail {

/// How the absorbed form cuts a step: each sequence's positions into splits of split_positions (merged afterwards by
/// log-sum-exp), each split walked in chunks of chunk_positions cache rows; `workers` run the splits.
struct absorbed_plan {
  std::int64_t chunk_positions;
  std::int64_t split_positions;
  std::size_t workers;
};

/// Host: chunks of 256 rows (590 KB of an fp32 Lite cache) are still in the core's caches when the weighted sum
/// reads them after the scores GEMM, so the cache is read from memory once (128 and 1024 measured no better); four splits per thread over the step's sequences (one
/// sequence alone still spreads over every core, ragged ones balance); threads once the work pays for them.
inline absorbed_plan plan_absorbed(const host_policy& policy, std::size_t sequences, std::int64_t positions,
                                   std::size_t /*most_rows*/, std::size_t work) {
  constexpr std::int64_t chunk_rows = 256;
  const std::int64_t chunk = std::min(chunk_rows, positions);
  const std::size_t workers =
      std::clamp<std::size_t>(work / min_gemm_work_per_thread, 1, policy.resolved_threads());
  const auto splits = static_cast<std::int64_t>((4 * workers + sequences - 1) / sequences);
  const std::int64_t per_split = (positions + splits - 1) / splits;
  return {chunk, (per_split + chunk - 1) / chunk * chunk, workers};
}

/// Other policies (the device): one issuer walks each sequence whole, in chunks whose scores fit 2^24 floats; the
/// policy's own GEMMs and element operations are the parallel part.
template <class Policy>
absorbed_plan plan_absorbed(const Policy& /*policy*/, std::size_t /*sequences*/, std::int64_t positions,
                            std::size_t most_rows, std::size_t /*work*/) {
  constexpr std::size_t most_scores = std::size_t{1} << 24;
  const auto chunk =
      std::clamp<std::int64_t>(static_cast<std::int64_t>(most_scores / std::max<std::size_t>(most_rows, 1)), 1,
                               positions);
  return {chunk, positions, 1};
}

/// Runs op(worker_policy, worker) for workers [0, workers): on the host each on its own thread with a one-thread
/// copy of the policy, so a worker's GEMMs and operations stay on its core and its scratch is its own.
template <class Op>
void for_each_worker(const host_policy& policy, std::size_t workers, Op op) {
  host_policy single = policy;
  single.threads = 1;
  for_each_n(host_policy{static_cast<unsigned>(workers), 1, policy.resource}, workers,
             [&](std::size_t worker) { op(single, worker); });
}

/// Other policies: one worker, the policy itself.
template <class Policy, class Op>
void for_each_worker(const Policy& policy, std::size_t /*workers*/, Op op) {
  op(policy, 0);
}

}  // namespace detail

template <class Policy = host_policy, class CacheElement = float>
class mla_attention {
 public:
  using policy_type = Policy;
  using shape = mla_shape;
  /// Per position and layer only kv_lora_rank + qk_rope_head_dim values.
  using cache_type = latent_cache<Policy, CacheElement>;

  static cache_type make_cache(const Policy& policy, const shape& dimensions, int attention_layers,
                               std::size_t max_sequences, std::int64_t max_positions) {
    return cache_type(policy, attention_layers, dimensions.kv_lora_rank, dimensions.qk_rope_head_dim, max_sequences,
                      max_positions);
  }

  /// The parameters as host arrays (one struct for every policy and cache element).
  using weights = mla_weights;

  mla_attention(const Policy& policy, const shape& dimensions, const weights& parameters) : shape_(dimensions) {
    validate(dimensions);
    const std::vector<tensor_entry> table = tensor_table(dimensions);
    for (const tensor_entry& entry : table) {
      std::size_t expected = 1;
      for (const std::int64_t extent : entry.dims) {
        expected *= static_cast<std::size_t>(extent);
      }
      const std::size_t given = field(parameters, entry.id).size();
      if (given != expected) {
        throw shape_mismatch("mla_attention: " + entry.name + " must hold " + describe(entry.dims) + " = " +
                             std::to_string(expected) + " values, got " + std::to_string(given));
      }
    }
    for (int index = 0; index < tensor_count; ++index) {
      const auto id = static_cast<tensor_id>(index);
      if (!field(parameters, id).empty() && !has(id, dimensions)) {
        throw invalid_argument(std::string("mla_attention: ") + name_of(id) + " is given but this shape (q_lora_rank = " +
                               std::to_string(dimensions.q_lora_rank) + ", attention_bias = " +
                               (dimensions.attention_bias ? "true" : "false") + ") has no such tensor");
      }
    }
    for (const tensor_entry& entry : table) {
      parameters_[entry.id] = upload(policy, field(parameters, entry.id));
    }
    // kv_b_proj's K half per head, transposed to [L x nope]: q_latent_h = q_nope_h W_K,h is then one gemm_nt.
    const int latent = dimensions.kv_lora_rank;
    const int nope = dimensions.qk_nope_head_dim;
    const int expanded = nope + dimensions.v_head_dim;
    std::vector<float> absorb(static_cast<std::size_t>(dimensions.heads) * latent * nope);
    for (int head = 0; head < dimensions.heads; ++head) {
      for (int n = 0; n < nope; ++n) {
        for (int l = 0; l < latent; ++l) {
          absorb[(static_cast<std::size_t>(head) * latent + l) * nope + n] =
              parameters.kv_b_proj[(static_cast<std::size_t>(head) * expanded + n) * latent + l];
        }
      }
    }
    k_absorb_ = upload(policy, view<const float>(absorb));
  }

  /// {prefix}.q_a_proj.weight (+ .bias), .q_a_layernorm.weight, .q_b_proj.weight, or .q_proj.weight when
  /// q_lora_rank = 0; .kv_a_proj_with_mqa.weight (+ .bias), .kv_a_layernorm.weight, .kv_b_proj.weight,
  /// .o_proj.weight (+ .bias); biases when attention_bias. Prefix e.g. "model.layers.3.self_attn.0". Every
  /// tensor's presence, shape and dtype is checked before any is read (format_error naming it).
  static mla_attention load(const Policy& policy, const checkpoint& source, const std::string& prefix,
                            const shape& dimensions) {
    validate(dimensions);
    const std::vector<tensor_entry> table = tensor_table(dimensions);
    for (const tensor_entry& entry : table) {
      check_float_tensor(source, prefix + "." + entry.name, entry.dims);
    }
    std::vector<std::vector<float>> values;
    weights parameters{};
    for (const tensor_entry& entry : table) {
      values.push_back(read_tensor_as<float>(source, prefix + "." + entry.name, entry.dims));
    }
    for (std::size_t i = 0; i < table.size(); ++i) {
      field(parameters, table[i].id) = view<const float>(values[i]);
    }
    return mla_attention(policy, dimensions, parameters);
  }

  /// The tensors load reads, under the same names.
  void save(const Policy& policy, const std::string& prefix, tensor_collection& tensors) const {
    for (const tensor_entry& entry : tensor_table(shape_)) {
      tensors.add<float>(policy, prefix + "." + entry.name, entry.dims, parameters_[entry.id].as_view());
    }
  }

  /// Pins the form of the next forwards (automatic by default).
  void set_form(mla_form form) { form_ = form; }
  [[nodiscard]] mla_form form() const { return form_; }

  /// x [step tokens x H] (policy memory) in the order of the cache's begun step; out [step tokens x H] is
  /// overwritten. Stores this layer's latents of the step's tokens in the cache; commit the step after the last
  /// layer.
  void forward(const Policy& policy, cache_type& cache, int layer, view<const float> x, view<float> out) {
    check_cache(cache, layer);
    const std::size_t tokens = cache.step_tokens();
    detail::require_rows("mla_attention: x", tokens, shape_.hidden, x.size());
    detail::require_rows("mla_attention: out", tokens, shape_.hidden, out.size());
    if (tokens == 0) {
      return;
    }
    const detail::mla_dims dims = layer_dims();
    const auto hidden = static_cast<std::size_t>(shape_.hidden);
    const auto heads = static_cast<std::size_t>(dims.heads);
    const std::size_t query_width = heads * static_cast<std::size_t>(dims.query_width());
    const view<float> q = detail::workspace(policy, q_, tokens * query_width);
    if (shape_.q_lora_rank > 0) {
      const auto rank = static_cast<std::size_t>(shape_.q_lora_rank);
      const view<float> compressed = detail::workspace(policy, q_compressed_, tokens * rank);
      gemm_nt(policy, tokens, rank, hidden, x, parameter(q_a), compressed);
      add_bias(policy, compressed, q_a_bias, rank);
      for_each_n(for_operations_of(policy, rank), tokens,
                 detail::rms_norm_row_op{compressed.data(), compressed.data(), parameter(q_a_norm).data(),
                                         shape_.q_lora_rank, shape_.latent_norm_eps});
      gemm_nt(policy, tokens, query_width, rank, view<const float>(compressed), parameter(q_b), q);
    } else {
      gemm_nt(policy, tokens, query_width, hidden, x, parameter(q_full), q);
    }
    const auto cache_width = static_cast<std::size_t>(dims.cache_width());
    const view<float> kv = detail::workspace(policy, kv_, tokens * cache_width);
    gemm_nt(policy, tokens, cache_width, hidden, x, parameter(kv_a), kv);
    add_bias(policy, kv, kv_a_bias, cache_width);

    const detail::token_place* plan = cache.step_plan().data();
    const interleaved_rotary rotary{rotary_frequencies::of(dims.rope, shape_.rope_theta, shape_.rope)};
    const view<float> query_nope =
        detail::workspace(policy, query_nope_, tokens * heads * static_cast<std::size_t>(dims.nope));
    const view<float> query_rope =
        detail::workspace(policy, query_rope_, tokens * heads * static_cast<std::size_t>(dims.rope));
    for_each_n(for_operations_of(policy, static_cast<std::size_t>(dims.query_width())), tokens * heads,
               detail::prepare_query_op{q.data(), dims, tokens, plan, query_scale(), rotary, query_nope.data(),
                                        query_rope.data()});
    for_each_n(for_operations_of(policy, cache_width), tokens,
               detail::store_latent_op<CacheElement>{kv.data(), parameter(kv_a_norm).data(), shape_.latent_norm_eps,
                                                     latent_scale(), dims, plan, cache.storage(), layer, rotary});

    const std::size_t context_width = heads * static_cast<std::size_t>(dims.v);
    const view<float> context = detail::workspace(policy, context_, tokens * context_width);
    if (pick_form(cache) == mla_form::absorbed) {
      absorbed(policy, cache, layer, dims, view<const float>(query_nope), view<const float>(query_rope), context);
    } else {
      expanded(policy, cache, layer, dims, view<const float>(query_nope), view<const float>(query_rope), context);
    }
    gemm_nt(policy, tokens, hidden, context_width, view<const float>(context), parameter(o), out);
    add_bias(policy, out, o_bias, hidden);
  }

  [[nodiscard]] const shape& dimensions() const { return shape_; }

 private:
  enum tensor_id { q_a, q_a_bias, q_a_norm, q_b, q_full, kv_a, kv_a_bias, kv_a_norm, kv_b, o, o_bias, tensor_count };

  /// A sequence of the begun step: its tokens are step tokens [first_token, + tokens), at positions
  /// first_position (its cached length) onwards.
  struct step_sequence {
    std::int32_t slot;
    std::size_t first_token;
    std::size_t tokens;
    std::int64_t first_position;
  };
  struct split_piece {
    std::size_t sequence;
    std::int64_t split;
  };

  struct tensor_entry {
    tensor_id id;
    std::string name;
    std::vector<std::int64_t> dims;
  };

  static const char* name_of(tensor_id id) {
    switch (id) {
      case q_a: return "q_a_proj.weight";
      case q_a_bias: return "q_a_proj.bias";
      case q_a_norm: return "q_a_layernorm.weight";
      case q_b: return "q_b_proj.weight";
      case q_full: return "q_proj.weight";
      case kv_a: return "kv_a_proj_with_mqa.weight";
      case kv_a_bias: return "kv_a_proj_with_mqa.bias";
      case kv_a_norm: return "kv_a_layernorm.weight";
      case kv_b: return "kv_b_proj.weight";
      case o: return "o_proj.weight";
      default: return "o_proj.bias";
    }
  }

  /// The weights member of tensor `id` (const or not, as `parameters`).
  template <class Weights>
  static auto& field(Weights& parameters, tensor_id id) {
    switch (id) {
      case q_a: return parameters.q_a_proj;
      case q_a_bias: return parameters.q_a_proj_bias;
      case q_a_norm: return parameters.q_a_layernorm;
      case q_b: return parameters.q_b_proj;
      case q_full: return parameters.q_proj;
      case kv_a: return parameters.kv_a_proj_with_mqa;
      case kv_a_bias: return parameters.kv_a_proj_with_mqa_bias;
      case kv_a_norm: return parameters.kv_a_layernorm;
      case kv_b: return parameters.kv_b_proj;
      case o: return parameters.o_proj;
      default: return parameters.o_proj_bias;
    }
  }

  /// Tensor `id`'s shape under `dims`.
  static std::vector<std::int64_t> dims_of(tensor_id id, const shape& dims) {
    const std::int64_t query_rows = static_cast<std::int64_t>(dims.heads) * dims.qk_head_dim();
    switch (id) {
      case q_a: return {dims.q_lora_rank, dims.hidden};
      case q_a_bias:
      case q_a_norm: return {dims.q_lora_rank};
      case q_b: return {query_rows, dims.q_lora_rank};
      case q_full: return {query_rows, dims.hidden};
      case kv_a: return {dims.kv_lora_rank + dims.qk_rope_head_dim, dims.hidden};
      case kv_a_bias: return {dims.kv_lora_rank + dims.qk_rope_head_dim};
      case kv_a_norm: return {dims.kv_lora_rank};
      case kv_b:
        return {static_cast<std::int64_t>(dims.heads) * (dims.qk_nope_head_dim + dims.v_head_dim), dims.kv_lora_rank};
      case o: return {dims.hidden, static_cast<std::int64_t>(dims.heads) * dims.v_head_dim};
      default: return {dims.hidden};
    }
  }

  /// Whether `dims` has tensor `id` (q_proj or the q LoRA chain; biases with attention_bias).
  static bool has(tensor_id id, const shape& dims) {
    const bool q_lora = dims.q_lora_rank > 0;
    switch (id) {
      case q_full: return !q_lora;
      case q_a:
      case q_a_norm:
      case q_b: return q_lora;
      case q_a_bias: return q_lora && dims.attention_bias;
      case kv_a_bias:
      case o_bias: return dims.attention_bias;
      default: return true;
    }
  }

  /// The tensors of `dims` with their shapes, in checkpoint order.
  static std::vector<tensor_entry> tensor_table(const shape& dims) {
    std::vector<tensor_entry> table;
    for (int index = 0; index < tensor_count; ++index) {
      const auto id = static_cast<tensor_id>(index);
      if (has(id, dims)) {
        table.push_back({id, name_of(id), dims_of(id, dims)});
      }
    }
    return table;
  }

  static std::string describe(const std::vector<std::int64_t>& dims) {
    std::string text = "[";
    for (std::size_t i = 0; i < dims.size(); ++i) {
      text += (i == 0 ? "" : " x ") + std::to_string(dims[i]);
    }
    return text + "]";
  }

  static void validate(const shape& dims) {
    const auto fail = [](const std::string& message) { throw invalid_argument("mla_attention: " + message); };
    const auto at_least = [&](const char* field, long long value, long long minimum) {
      if (value < minimum) {
        fail(std::string(field) + " must be >= " + std::to_string(minimum) + ", got " + std::to_string(value));
      }
    };
    at_least("hidden", dims.hidden, 1);
    at_least("heads", dims.heads, 1);
    at_least("q_lora_rank", dims.q_lora_rank, 0);
    at_least("kv_lora_rank", dims.kv_lora_rank, 1);
    at_least("qk_nope_head_dim", dims.qk_nope_head_dim, 1);
    at_least("qk_rope_head_dim", dims.qk_rope_head_dim, 2);
    at_least("v_head_dim", dims.v_head_dim, 1);
    if (dims.qk_rope_head_dim % 2 != 0) {
      fail("qk_rope_head_dim = " + std::to_string(dims.qk_rope_head_dim) + " must be even (RoPE rotates pairs)");
    }
    if (!(dims.latent_norm_eps >= 0.0f) || !std::isfinite(dims.latent_norm_eps)) {
      fail("latent_norm_eps must be finite and >= 0, got " + std::to_string(dims.latent_norm_eps));
    }
    static_cast<void>(rotary_frequencies::of(dims.qk_rope_head_dim, dims.rope_theta, dims.rope));
  }

  void check_cache(const cache_type& cache, int layer) const {
    if (!cache.step_begun()) {
      throw invalid_argument("mla_attention: the latent cache has no begun step; call latent_cache::begin first");
    }
    if (layer < 0 || layer >= cache.attention_layers()) {
      throw invalid_argument("mla_attention: layer " + std::to_string(layer) + " is outside the cache's " +
                             std::to_string(cache.attention_layers()) + " attention layers");
    }
    if (cache.kv_lora_rank() != shape_.kv_lora_rank || cache.rope_dim() != shape_.qk_rope_head_dim) {
      throw shape_mismatch("mla_attention: the latent cache holds kv_lora_rank + rope = " +
                           std::to_string(cache.kv_lora_rank()) + " + " + std::to_string(cache.rope_dim()) +
                           " values per token, the layer needs " + std::to_string(shape_.kv_lora_rank) + " + " +
                           std::to_string(shape_.qk_rope_head_dim));
    }
  }

  [[nodiscard]] detail::mla_dims layer_dims() const {
    return {shape_.heads, shape_.qk_nope_head_dim, shape_.qk_rope_head_dim, shape_.v_head_dim, shape_.kv_lora_rank};
  }
  [[nodiscard]] float query_scale() const {
    return shape_.q_lora_rank > 0 && shape_.scale_q_lora
               ? static_cast<float>(std::sqrt(static_cast<double>(shape_.hidden) / shape_.q_lora_rank))
               : 1.0f;
  }
  [[nodiscard]] float latent_scale() const {
    return shape_.scale_kv_lora
               ? static_cast<float>(std::sqrt(static_cast<double>(shape_.hidden) / shape_.kv_lora_rank))
               : 1.0f;
  }
  [[nodiscard]] float softmax_scale() const {
    return static_cast<float>(std::pow(static_cast<double>(shape_.qk_head_dim()), -0.5) *
                              shape_.rope.softmax_scale_factor());
  }
  [[nodiscard]] view<const float> parameter(tensor_id id) const { return parameters_[id].as_view(); }

  void add_bias(const Policy& policy, view<float> y, tensor_id id, std::size_t width) const {
    if (parameters_[id].size() != 0) {
      for_each_n(policy, y.size(), detail::add_bias_op{y.data(), parameter(id).data(), width});
    }
  }

  /// Positions the step attends over, summed over its sequences.
  static std::int64_t attended_rows(const cache_type& cache) {
    std::int64_t rows = 0;
    for (std::size_t s = 0; s < cache.step_slots().size(); ++s) {
      if (cache.step_sizes()[s] > 0) {
        rows += cache.length(cache.step_slots()[s]) + cache.step_sizes()[s];
      }
    }
    return rows;
  }

  [[nodiscard]] mla_form pick_form(const cache_type& cache) const {
    if (form_ != mla_form::automatic) {
      return form_;
    }
    return static_cast<std::int64_t>(cache.step_tokens()) * 4 >= attended_rows(cache) ? mla_form::expanded
                                                                                       : mla_form::absorbed;
  }

  void absorbed(const Policy& policy, cache_type& cache, int layer, const detail::mla_dims& dims,
                view<const float> query_nope, view<const float> query_rope, view<float> context) {
    const std::size_t tokens = cache.step_tokens();
    const auto heads = static_cast<std::size_t>(dims.heads);
    const auto latent = static_cast<std::size_t>(dims.latent);
    const auto nope = static_cast<std::size_t>(dims.nope);
    const auto v = static_cast<std::size_t>(dims.v);
    const view<float> query_latent = detail::workspace(policy, query_latent_, heads * tokens * latent);
    for (std::size_t head = 0; head < heads; ++head) {
      gemm_nt(policy, tokens, latent, nope, query_nope.subview(head * tokens * nope, tokens * nope),
              k_absorb_.as_view().subview(head * latent * nope, latent * nope),
              query_latent.subview(head * tokens * latent, tokens * latent));
    }
    const auto width = static_cast<std::size_t>(dims.cache_width());
    const view<float> query = detail::workspace(policy, absorbed_query_, tokens * heads * width);
    for_each_n(for_operations_of(policy, width), tokens * heads,
               detail::absorbed_query_op{query_latent.data(), query_rope.data(), dims, tokens, softmax_scale(),
                                         query.data()});

    // Per sequence, scores = query rows x its cache rows^T and latent sum = weights x their c_kv: two GEMMs per
    // chunk of positions, the online softmax between them; splits of the positions run apart and merge after.
    sequences_.clear();
    std::size_t first_token = 0;
    std::size_t most_rows = 0;
    std::size_t work = 0;
    for (std::size_t s = 0; s < cache.step_slots().size(); ++s) {
      const auto size = static_cast<std::size_t>(cache.step_sizes()[s]);
      if (size > 0) {
        const std::int32_t slot = cache.step_slots()[s];
        sequences_.push_back({slot, first_token, size, cache.length(slot)});
        most_rows = std::max(most_rows, size * heads);
        work += size * heads * static_cast<std::size_t>(cache.length(slot) + cache.step_sizes()[s]) * (width + latent);
        first_token += size;
      }
    }
    const std::int64_t positions = cache.step_positions();
    const detail::absorbed_plan plan = detail::plan_absorbed(policy, sequences_.size(), positions, most_rows, work);
    pieces_.clear();
    for (std::size_t sequence = 0; sequence < sequences_.size(); ++sequence) {
      const std::int64_t length = sequences_[sequence].first_position + static_cast<std::int64_t>(sequences_[sequence].tokens);
      for (std::int64_t split = 0; split * plan.split_positions < length; ++split) {
        pieces_.push_back({sequence, split});
      }
    }
    const auto splits = static_cast<std::size_t>((positions + plan.split_positions - 1) / plan.split_positions);
    const view<float> states = detail::workspace(policy, states_, splits * tokens * heads * (latent + 2));
    const std::size_t workers = std::min(plan.workers, pieces_.size());
    const auto chunk = static_cast<std::size_t>(plan.chunk_positions);
    // Per worker: the chunk's scores, its latent sums and rescale factors, and (bf16 cache) its rows in fp32.
    const std::size_t widened_size = std::is_same_v<CacheElement, float> ? 0 : chunk * width;
    const std::size_t worker_size = most_rows * (chunk + latent + 1) + widened_size;
    const view<float> scratch = detail::workspace(policy, absorbed_scratch_, workers * worker_size);
    const detail::latent_storage<CacheElement> storage = cache.storage();
    detail::for_each_worker(policy, workers, [&](const auto& worker_policy, std::size_t worker) {
      const view<float> own = scratch.subview(worker * worker_size, worker_size);
      for (std::size_t p = pieces_.size() * worker / workers; p < pieces_.size() * (worker + 1) / workers; ++p) {
        attend_split(worker_policy, storage, layer, dims, sequences_[pieces_[p].sequence], pieces_[p].split, plan,
                     tokens, view<const float>(query), states, own);
      }
    });
    const view<float> latent_context = detail::workspace(policy, latent_context_, heads * tokens * latent);
    for_each_n(for_operations_of(policy, splits * latent), tokens * heads,
               detail::merge_splits_op{states.data(), dims, tokens, cache.step_plan().data(), plan.split_positions,
                                       latent_context.data()});
    const view<float> head_values = detail::workspace(policy, head_values_, heads * tokens * v);
    const auto expanded_rows = static_cast<std::size_t>(dims.expanded_width());
    for (std::size_t head = 0; head < heads; ++head) {
      gemm_nt(policy, tokens, v, latent, view<const float>(latent_context.subview(head * tokens * latent, tokens * latent)),
              parameter(kv_b).subview((head * expanded_rows + nope) * latent, v * latent),
              head_values.subview(head * tokens * v, tokens * v));
    }
    for_each_n(for_operations_of(policy, v), heads * tokens,
               detail::heads_to_tokens_op{head_values.data(), dims, tokens, context.data()});
  }

  /// One split of one sequence (absorbed form): its states [sum, max, weighted c_kv] of the sequence's rows (token,
  /// head) over positions [split x split_positions, + split_positions), chunk by chunk. `scratch` is the worker's.
  template <class WorkerPolicy>
  static void attend_split(const WorkerPolicy& policy, const detail::latent_storage<CacheElement>& storage, int layer,
                           const detail::mla_dims& dims, const step_sequence& sequence, std::int64_t split,
                           const detail::absorbed_plan& plan, std::size_t tokens, view<const float> query,
                           view<float> states, view<float> scratch) {
    const std::size_t rows = sequence.tokens * static_cast<std::size_t>(dims.heads);
    const auto width = static_cast<std::size_t>(dims.cache_width());
    const auto latent = static_cast<std::size_t>(dims.latent);
    const auto chunk = static_cast<std::size_t>(plan.chunk_positions);
    const view<const float> query_rows = query.subview(sequence.first_token * static_cast<std::size_t>(dims.heads) * width,
                                                      rows * width);
    const view<float> split_states =
        states.subview((static_cast<std::size_t>(split) * tokens + sequence.first_token) *
                           static_cast<std::size_t>(dims.heads) * (latent + 2),
                       rows * (latent + 2));
    const view<float> scores = scratch.subview(0, rows * chunk);
    const view<float> chunk_sum = scratch.subview(rows * chunk, rows * latent);
    const view<float> rescale = scratch.subview(rows * (chunk + latent), rows);
    float* const widened = scratch.data() + rows * (chunk + latent + 1);
    const std::int64_t begin = split * plan.split_positions;
    const std::int64_t end =
        std::min(sequence.first_position + static_cast<std::int64_t>(sequence.tokens), begin + plan.split_positions);
    for (std::int64_t first = begin; first < end; first += plan.chunk_positions) {
      const auto length = static_cast<std::size_t>(std::min(plan.chunk_positions, end - first));
      const CacheElement* stored = storage.values + storage.offset(layer, sequence.slot, first);
      const float* cached = nullptr;
      if constexpr (std::is_same_v<CacheElement, float>) {
        cached = stored;
      } else {
        for_each_n(policy, length * width, detail::widen_op<CacheElement>{stored, widened});
        cached = widened;
      }
      const view<float> chunk_scores = scores.subview(0, rows * length);
      gemm_nt(policy, rows, length, width, query_rows, view<const float>(cached, length * width), chunk_scores);
      for_each_n(for_operations_of(policy, length), rows,
                 detail::chunk_softmax_op{chunk_scores.data(), static_cast<std::int64_t>(length), dims.heads,
                                          sequence.first_position - first, first == begin, split_states.data(),
                                          dims.latent, rescale.data()});
      gemm_nn(policy, rows, latent, length, view<const float>(chunk_scores),
              view<const float>(cached, (length - 1) * width + latent), width, chunk_sum);
      for_each_n(for_operations_of(policy, latent), rows,
                 detail::accumulate_chunk_op{split_states.data(), chunk_sum.data(), rescale.data(), dims.latent});
    }
  }

  void expanded(const Policy& policy, cache_type& cache, int layer, const detail::mla_dims& dims,
                view<const float> query_nope, view<const float> query_rope, view<float> context) {
    const std::size_t tokens = cache.step_tokens();
    // Every attended position of the step's sequences once, sequence by sequence; each token's first row. The
    // host arrays outlive this call, as copy_to asks of a stream-ordered source.
    gathered_places_host_.clear();
    first_row_host_.clear();
    for (std::size_t s = 0; s < cache.step_slots().size(); ++s) {
      const std::int64_t size = cache.step_sizes()[s];
      if (size == 0) {
        continue;
      }
      const auto slot = cache.step_slots()[s];
      const auto first = static_cast<std::int64_t>(gathered_places_host_.size());
      first_row_host_.insert(first_row_host_.end(), static_cast<std::size_t>(size), first);
      for (std::int64_t position = 0; position < cache.length(slot) + size; ++position) {
        gathered_places_host_.push_back({slot, position});
      }
    }
    const std::size_t rows = gathered_places_host_.size();
    const view<detail::token_place> places = detail::workspace(policy, gathered_places_, rows);
    copy_to(policy, view<const detail::token_place>(gathered_places_host_), places);
    const view<std::int64_t> first_row = detail::workspace(policy, first_row_, tokens);
    copy_to(policy, view<const std::int64_t>(first_row_host_), first_row);

    const auto latent = static_cast<std::size_t>(dims.latent);
    const std::size_t expanded_width = static_cast<std::size_t>(dims.heads) * static_cast<std::size_t>(dims.expanded_width());
    const detail::latent_storage<CacheElement> storage = cache.storage();
    const detail::latent_storage<const CacheElement> readable{storage.values, storage.slots, storage.max_positions,
                                                              storage.width};
    const view<float> gathered = detail::workspace(policy, gathered_, rows * latent);
    for_each_n(for_operations_of(policy, latent), rows,
               detail::gather_latent_op<CacheElement>{places.data(), readable, layer, dims.latent, gathered.data()});
    const view<float> expanded_rows = detail::workspace(policy, expanded_, rows * expanded_width);
    gemm_nt(policy, rows, expanded_width, latent, view<const float>(gathered), parameter(kv_b), expanded_rows);
    const auto per_position = static_cast<std::size_t>(dims.nope + dims.rope + dims.v);
    for_each_n(for_operations_of(policy, per_position * static_cast<std::size_t>(cache.step_positions())),
               tokens * static_cast<std::size_t>(dims.heads),
               detail::expanded_attention_op<CacheElement>{query_nope.data(), query_rope.data(), expanded_rows.data(),
                                                           first_row.data(), dims, tokens, cache.step_plan().data(),
                                                           readable, layer, softmax_scale(), context.data()});
  }

  shape shape_;
  mla_form form_ = mla_form::automatic;
  std::vector<typename Policy::template buffer<float>> parameters_ =
      std::vector<typename Policy::template buffer<float>>(tensor_count);
  /// kv_b_proj's K half, [heads][kv_lora_rank][nope].
  typename Policy::template buffer<float> k_absorb_;
  typename Policy::template buffer<float> q_;
  typename Policy::template buffer<float> q_compressed_;
  typename Policy::template buffer<float> kv_;
  typename Policy::template buffer<float> query_nope_;
  typename Policy::template buffer<float> query_rope_;
  typename Policy::template buffer<float> context_;
  typename Policy::template buffer<float> query_latent_;
  typename Policy::template buffer<float> absorbed_query_;
  typename Policy::template buffer<float> states_;
  typename Policy::template buffer<float> absorbed_scratch_;
  typename Policy::template buffer<float> latent_context_;
  typename Policy::template buffer<float> head_values_;
  typename Policy::template buffer<float> gathered_;
  typename Policy::template buffer<float> expanded_;
  typename Policy::template buffer<detail::token_place> gathered_places_;
  typename Policy::template buffer<std::int64_t> first_row_;
  std::vector<step_sequence> sequences_;
  std::vector<split_piece> pieces_;
  std::vector<detail::token_place> gathered_places_host_;
  std::vector<std::int64_t> first_row_host_;
};

static_assert(attention_layer<mla_attention<>>);
static_assert(attention_layer<mla_attention<host_policy, bf16>>);

}  // namespace ngemb
