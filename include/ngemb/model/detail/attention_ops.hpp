#pragma once
// The element operations of one attention layer's step, shared by host and device. The fused projection output
// qkv holds, per token, `heads` query heads, then `kv_heads` key heads, then `kv_heads` value heads.
#include <cstddef>
#include <cstdint>

#include "ngemb/core/macros.hpp"
#include "ngemb/model/detail/kv_layout.hpp"
#include "ngemb/model/rotary.hpp"

namespace ngemb::detail {

struct qkv_layout {
  int heads;
  int kv_heads;
  int head_dim;

  NGEMB_HD std::size_t row_width() const { return static_cast<std::size_t>(heads + 2 * kv_heads) * head_dim; }
  NGEMB_HD std::size_t query(std::size_t token, int head) const {
    return token * row_width() + static_cast<std::size_t>(head) * head_dim;
  }
  NGEMB_HD std::size_t key(std::size_t token, int kv_head) const { return query(token, heads + kv_head); }
  NGEMB_HD std::size_t value(std::size_t token, int kv_head) const { return query(token, heads + kv_heads + kv_head); }
};

/// Index (token, r) over r < heads + kv_heads: r < heads rotates query head r in place; r = heads + g rotates key
/// head g and stores it with value head g in the cache at the token's slot and position.
struct rotate_and_store_op {
  float* qkv;
  qkv_layout layout;
  const token_place* plan;
  kv_storage cache;
  int layer;
  rotary_embedding rotary;

  NGEMB_HD void operator()(std::size_t index) const {
    const auto per_token = static_cast<std::size_t>(layout.heads + layout.kv_heads);
    const std::size_t token = index / per_token;
    const int head = static_cast<int>(index % per_token);
    const token_place place = plan[token];
    if (head < layout.heads) {
      rotary.apply(qkv + layout.query(token, head), place.position);
      return;
    }
    const int kv_head = head - layout.heads;
    float* key = qkv + layout.key(token, kv_head);
    const float* value = qkv + layout.value(token, kv_head);
    rotary.apply(key, place.position);
    const std::size_t at = cache.offset(layer, place.slot, place.position, kv_head);
    for (int d = 0; d < layout.head_dim; ++d) {
      cache.keys[at + d] = key[d];
      cache.values[at + d] = value[d];
    }
  }
};

/// Index (token, head): softmax(q.k * scale) over the keys at positions [0, position] of the token's slot, times
/// the values. The softmax is online (a running maximum rescales the running sum and the accumulated values), so
/// one pass needs no score array, and the accumulator is the output row itself.
struct causal_attention_op {
  const float* qkv;
  qkv_layout layout;
  const token_place* plan;
  kv_storage cache;
  int layer;
  float scale;
  float* context;  ///< [tokens x heads x head_dim]

  NGEMB_HD void operator()(std::size_t index) const {
    const std::size_t token = index / static_cast<std::size_t>(layout.heads);
    const int head = static_cast<int>(index % static_cast<std::size_t>(layout.heads));
    const int kv_head = head / (layout.heads / layout.kv_heads);
    const float* query = qkv + layout.query(token, head);
    float* out = context + index * static_cast<std::size_t>(layout.head_dim);
    const token_place place = plan[token];
    for (int d = 0; d < layout.head_dim; ++d) {
      out[d] = 0.0f;
    }
    float running_max = 0.0f;
    float sum = 0.0f;
    for (std::int64_t position = 0; position <= place.position; ++position) {
      const std::size_t at = cache.offset(layer, place.slot, position, kv_head);
      float score = 0.0f;
      for (int d = 0; d < layout.head_dim; ++d) {
        score += query[d] * cache.keys[at + d];
      }
      score *= scale;
      const float previous_max = position == 0 ? score : running_max;
      running_max = score > previous_max ? score : previous_max;
      const float rescale = ::expf(previous_max - running_max);
      const float weight = ::expf(score - running_max);
      sum = sum * rescale + weight;
      for (int d = 0; d < layout.head_dim; ++d) {
        out[d] = out[d] * rescale + weight * cache.values[at + d];
      }
    }
    for (int d = 0; d < layout.head_dim; ++d) {
      out[d] /= sum;
    }
  }
};

}  // namespace ngemb::detail
