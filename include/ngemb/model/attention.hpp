#pragma once
// Self-attention with grouped query heads (GQA; MHA when kv_heads == heads), RoPE (HF Llama convention) and a KV
// cache. One call serves a ragged batch mixing prefills, chunked prefills and decodes: the cache's begun step says
// where each token sits. Per step: one GEMM for q, k and v together (the three weights are stacked), rotation and
// K/V store per token (its heads share the angles), causal attention per (token, kv head) for the query heads that
// share it, over its slot's cached positions up to its own (the step's K/V are stored first, so earlier tokens of
// the same step are among them), one GEMM for o.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/attention_layer.hpp"
#include "ngemb/model/detail/attention_ops.hpp"
#include "ngemb/model/detail/row_checks.hpp"
#include "ngemb/model/detail/workspace.hpp"
#include "ngemb/model/kv_cache.hpp"
#include "ngemb/model/rotary.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

/// The sizes of a GQA attention sublayer.
struct attention_shape {
  std::int64_t hidden;  ///< H
  int heads;            ///< query heads
  int kv_heads;         ///< key/value heads; divides heads
  int head_dim;         ///< even (RoPE pairs)
  double rope_theta;
};

template <class Policy = host_policy>
class attention {
 public:
  using policy_type = Policy;
  using shape = attention_shape;
  /// GQA keeps every position's rotated keys and values.
  using cache_type = kv_cache<Policy>;

  /// The cache of `attention_layers` sublayers of this shape, for max_sequences sequences of max_positions tokens.
  static cache_type make_cache(const Policy& policy, const shape& dimensions, int attention_layers,
                               std::size_t max_sequences, std::int64_t max_positions) {
    return cache_type(policy, attention_layers, dimensions.kv_heads, dimensions.head_dim, max_sequences,
                      max_positions);
  }

  /// Linear weights as host arrays: q [heads*head_dim x H], k and v [kv_heads*head_dim x H], o [H x heads*head_dim].
  struct weights {
    view<const float> q;
    view<const float> k;
    view<const float> v;
    view<const float> o;
  };

  attention(const Policy& policy, const shape& dimensions, const weights& parameters) : shape_(dimensions) {
    const auto [q, k, v, o] = parameters;
    validate(dimensions);
    const std::size_t query_rows = static_cast<std::size_t>(dimensions.heads) * dimensions.head_dim;
    const std::size_t kv_rows = static_cast<std::size_t>(dimensions.kv_heads) * dimensions.head_dim;
    const auto hidden = static_cast<std::size_t>(dimensions.hidden);
    const auto require = [](const char* name, std::size_t rows, std::size_t columns, std::size_t values) {
      if (values != rows * columns) {
        throw shape_mismatch(std::string("attention: ") + name + " must hold " + std::to_string(rows) + " x " +
                             std::to_string(columns) + " values, got " + std::to_string(values));
      }
    };
    require("q_proj [heads*head_dim x H]", query_rows, hidden, q.size());
    require("k_proj [kv_heads*head_dim x H]", kv_rows, hidden, k.size());
    require("v_proj [kv_heads*head_dim x H]", kv_rows, hidden, v.size());
    require("o_proj [H x heads*head_dim]", hidden, query_rows, o.size());
    std::vector<float> stacked(q.begin(), q.end());
    stacked.insert(stacked.end(), k.begin(), k.end());
    stacked.insert(stacked.end(), v.begin(), v.end());
    qkv_weight_ = upload(policy, view<const float>(stacked));
    o_weight_ = upload(policy, o);
  }

  /// {prefix}.q_proj.weight, .k_proj.weight, .v_proj.weight, .o_proj.weight (no biases), prefix e.g.
  /// "model.layers.{l}.self_attn.{i}".
  static attention load(const Policy& policy, const checkpoint& source, const std::string& prefix,
                        const shape& dimensions) {
    validate(dimensions);
    const std::int64_t query_rows = static_cast<std::int64_t>(dimensions.heads) * dimensions.head_dim;
    const std::int64_t kv_rows = static_cast<std::int64_t>(dimensions.kv_heads) * dimensions.head_dim;
    const auto read = [&](const char* projection, std::int64_t rows, std::int64_t columns) {
      const std::int64_t matrix[] = {rows, columns};
      return read_tensor_as<float>(source, prefix + "." + projection + ".weight", matrix);
    };
    const auto q = read("q_proj", query_rows, dimensions.hidden);
    const auto k = read("k_proj", kv_rows, dimensions.hidden);
    const auto v = read("v_proj", kv_rows, dimensions.hidden);
    const auto o = read("o_proj", dimensions.hidden, query_rows);
    return attention(policy, dimensions,
                     {.q = view<const float>(q), .k = view<const float>(k), .v = view<const float>(v),
                      .o = view<const float>(o)});
  }

  void save(const Policy& policy, const std::string& prefix, tensor_collection& tensors) const {
    const std::int64_t query_rows = static_cast<std::int64_t>(shape_.heads) * shape_.head_dim;
    const std::int64_t kv_rows = static_cast<std::int64_t>(shape_.kv_heads) * shape_.head_dim;
    const auto hidden = static_cast<std::size_t>(shape_.hidden);
    const view<const float> stacked = qkv_weight_.as_view();
    const std::size_t q_size = static_cast<std::size_t>(query_rows) * hidden;
    const std::size_t kv_size = static_cast<std::size_t>(kv_rows) * hidden;
    tensors.add<float>(policy, prefix + ".q_proj.weight", {query_rows, shape_.hidden}, stacked.subview(0, q_size));
    tensors.add<float>(policy, prefix + ".k_proj.weight", {kv_rows, shape_.hidden}, stacked.subview(q_size, kv_size));
    tensors.add<float>(policy, prefix + ".v_proj.weight", {kv_rows, shape_.hidden},
                       stacked.subview(q_size + kv_size, kv_size));
    tensors.add<float>(policy, prefix + ".o_proj.weight", {shape_.hidden, query_rows}, o_weight_.as_view());
  }

  /// x [step tokens x H] (policy memory) in the order of the cache's begun step; out [step tokens x H] is
  /// overwritten. Stores this layer's K/V of the step's tokens in the cache; commit the step after the last layer.
  void forward(const Policy& policy, cache_type& cache, int layer, view<const float> x, view<float> out) {
    check_cache(cache, layer);
    const std::size_t tokens = cache.step_tokens();
    detail::require_rows("attention: x", tokens, shape_.hidden, x.size());
    detail::require_rows("attention: out", tokens, shape_.hidden, out.size());
    const detail::qkv_layout layout{shape_.heads, shape_.kv_heads, shape_.head_dim};
    const auto hidden = static_cast<std::size_t>(shape_.hidden);
    const std::size_t context_width = static_cast<std::size_t>(shape_.heads) * shape_.head_dim;
    const view<float> qkv = detail::workspace(policy, qkv_, tokens * layout.row_width());
    const view<float> context = detail::workspace(policy, context_, tokens * context_width);
    gemm_nt(policy, tokens, layout.row_width(), hidden, x, qkv_weight_.as_view(), qkv);

    const detail::token_place* plan = cache.step_plan().data();
    const detail::kv_storage storage = cache.storage();
    const auto head_work = static_cast<std::size_t>(shape_.head_dim);
    for_each_n(for_operations_of(policy, head_work * static_cast<std::size_t>(shape_.heads + shape_.kv_heads)), tokens,
               detail::rotate_and_store_op{qkv.data(), layout, plan, storage, layer,
                                           rotary_embedding{shape_.head_dim, shape_.rope_theta}});
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape_.head_dim));
    const detail::causal_attention_op attend{qkv.data(), layout, plan, storage, layer, scale, context.data(),
                                             heads_per_operation(policy)};
    for_each_n(for_operations_of(policy, static_cast<std::size_t>(attend.heads_per_op) * head_work *
                                             static_cast<std::size_t>(cache.step_positions())),
               attend.operations(tokens), attend);

    gemm_nt(policy, tokens, hidden, context_width, view<const float>(context), o_weight_.as_view(), out);
  }

  [[nodiscard]] const shape& dimensions() const { return shape_; }

 private:
  /// Query heads of one kv head that one attention operation serves: as many as it holds where an operation covers
  /// whole rows (row_chunk, the host: each cache row is then read once for all of them), one where it covers a few
  /// elements (a device: more threads).
  int heads_per_operation(const Policy& policy) const {
    const int group = shape_.heads / shape_.kv_heads;
    if (row_chunk(policy) < static_cast<std::size_t>(group) * static_cast<std::size_t>(shape_.head_dim)) {
      return 1;
    }
    return std::min(group, detail::causal_attention_op::max_heads_per_op);
  }

  static void validate(const shape& dimensions) {
    const auto fail = [](const std::string& message) { throw invalid_argument("attention: " + message); };
    if (dimensions.hidden < 1 || dimensions.heads < 1 || dimensions.kv_heads < 1 || dimensions.head_dim < 1) {
      fail("hidden, heads, kv_heads and head_dim must be >= 1, got " + std::to_string(dimensions.hidden) + ", " +
           std::to_string(dimensions.heads) + ", " + std::to_string(dimensions.kv_heads) + ", " +
           std::to_string(dimensions.head_dim));
    }
    if (dimensions.heads % dimensions.kv_heads != 0) {
      fail("heads = " + std::to_string(dimensions.heads) + " is not a multiple of kv_heads = " +
           std::to_string(dimensions.kv_heads));
    }
    if (dimensions.head_dim % 2 != 0) {
      fail("head_dim = " + std::to_string(dimensions.head_dim) + " must be even (RoPE rotates pairs)");
    }
    if (!(dimensions.rope_theta > 0.0) || !std::isfinite(dimensions.rope_theta)) {
      fail("rope_theta must be finite and > 0, got " + std::to_string(dimensions.rope_theta));
    }
  }

  void check_cache(const kv_cache<Policy>& cache, int layer) const {
    if (!cache.step_begun()) {
      throw invalid_argument("attention: the KV cache has no begun step; call kv_cache::begin first");
    }
    if (layer < 0 || layer >= cache.attention_layers()) {
      throw invalid_argument("attention: layer " + std::to_string(layer) + " is outside the cache's " +
                             std::to_string(cache.attention_layers()) + " attention layers");
    }
    if (cache.kv_heads() != shape_.kv_heads || cache.head_dim() != shape_.head_dim) {
      throw shape_mismatch("attention: the KV cache holds kv_heads x head_dim = " + std::to_string(cache.kv_heads()) +
                           " x " + std::to_string(cache.head_dim()) + ", the layer needs " +
                           std::to_string(shape_.kv_heads) + " x " + std::to_string(shape_.head_dim));
    }
  }

  shape shape_;
  /// q_proj, k_proj and v_proj stacked: [(heads + 2 kv_heads) * head_dim x H].
  typename Policy::template buffer<float> qkv_weight_;
  typename Policy::template buffer<float> o_weight_;
  typename Policy::template buffer<float> qkv_;
  typename Policy::template buffer<float> context_;
};

static_assert(attention_layer<attention<>>);

}  // namespace ngemb
