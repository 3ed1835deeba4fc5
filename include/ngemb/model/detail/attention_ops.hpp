#pragma once
// The element operations of one attention layer's step, shared by host and device. The fused projection output
// qkv holds, per token, `heads` query heads, then `kv_heads` key heads, then `kv_heads` value heads.
#include <cstddef>
#include <cstdint>

#include "ngemb/core/macros.hpp"
#include "ngemb/model/detail/kv_layout.hpp"
#include "ngemb/model/detail/lane_math.hpp"
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

/// Index token: rotates its query and key heads (one run of heads + kv_heads head vectors in its qkv row, sharing
/// the angles) and stores each key head with its value head in the cache at the token's slot and position.
struct rotate_and_store_op {
  float* qkv;
  qkv_layout layout;
  const token_place* plan;
  kv_storage cache;
  int layer;
  rotary_embedding rotary;

  NGEMB_HD void operator()(std::size_t token) const {
    const token_place place = plan[token];
    rotary.apply(qkv + layout.query(token, 0), layout.heads + layout.kv_heads,
                 static_cast<std::size_t>(layout.head_dim), place.position);
    for (int kv_head = 0; kv_head < layout.kv_heads; ++kv_head) {
      const float* key = qkv + layout.key(token, kv_head);
      const float* value = qkv + layout.value(token, kv_head);
      const std::size_t at = cache.offset(layer, place.slot, place.position, kv_head);
      for (int d = 0; d < layout.head_dim; ++d) {
        cache.keys[at + d] = key[d];
        cache.values[at + d] = value[d];
      }
    }
  }
};

/// Index (token, kv head, block of up to heads_per_op of the kv head's query heads): for each of those query heads,
/// softmax(q.k * scale) over the keys at positions [0, position] of the token's slot, times the values. The
/// query heads of one kv head read the same keys and values, so one operation serves several of them and reads each
/// cache row once for all. Positions go in blocks of block_positions: the block's scores first, then one
/// online-softmax step per block (the block's maximum rescales the running sum and the accumulated values once),
/// then the weighted values; each loop over a block's positions vectorises (lane_math.hpp). The accumulator is the
/// output row itself.
struct causal_attention_op {
  static constexpr int max_heads_per_op = 8;
  static constexpr int block_positions = 4 * reduction_lanes;
  static constexpr float lowest_score = -3.402823466e38f;

  const float* qkv;
  qkv_layout layout;
  const token_place* plan;
  kv_storage cache;
  int layer;
  float scale;
  float* context;    ///< [tokens x heads x head_dim]
  int heads_per_op;  ///< 1 to max_heads_per_op

  [[nodiscard]] NGEMB_HD int group() const { return layout.heads / layout.kv_heads; }
  [[nodiscard]] NGEMB_HD int blocks_per_kv_head() const { return (group() + heads_per_op - 1) / heads_per_op; }
  /// Operations of a step of `tokens` tokens.
  [[nodiscard]] NGEMB_HD std::size_t operations(std::size_t tokens) const {
    return tokens * static_cast<std::size_t>(layout.kv_heads) * static_cast<std::size_t>(blocks_per_kv_head());
  }

  NGEMB_HD void operator()(std::size_t index) const {
    const auto blocks = static_cast<std::size_t>(blocks_per_kv_head());
    const std::size_t token = index / (static_cast<std::size_t>(layout.kv_heads) * blocks);
    const int kv_head = static_cast<int>(index / blocks % static_cast<std::size_t>(layout.kv_heads));
    const int first_head = kv_head * group() + static_cast<int>(index % blocks) * heads_per_op;
    const int remaining = (kv_head + 1) * group() - first_head;
    const int count = remaining < heads_per_op ? remaining : heads_per_op;
    const int width = layout.head_dim;
    const token_place place = plan[token];
    float* out[max_heads_per_op];
    const float* query[max_heads_per_op];
    float running_max[max_heads_per_op];
    float sum[max_heads_per_op];
    for (int g = 0; g < count; ++g) {
      query[g] = qkv + layout.query(token, first_head + g);
      out[g] = context + (token * static_cast<std::size_t>(layout.heads) + static_cast<std::size_t>(first_head + g)) *
                             static_cast<std::size_t>(width);
      for (int d = 0; d < width; ++d) {
        out[g][d] = 0.0f;
      }
      sum[g] = 0.0f;
      running_max[g] = 0.0f;
    }
    const std::size_t stride = cache.position_stride();
    float weights[max_heads_per_op][block_positions];
    for (std::int64_t first = 0; first <= place.position; first += block_positions) {
      const std::int64_t left = place.position + 1 - first;
      const int length = left < block_positions ? static_cast<int>(left) : block_positions;
      const std::size_t at = cache.offset(layer, place.slot, first, kv_head);
      for (int j = 0; j < length; ++j) {
        const float* key = cache.keys + at + static_cast<std::size_t>(j) * stride;
        for (int g = 0; g < count; ++g) {
          weights[g][j] = dot_widened(query[g], key, width) * scale;
        }
      }
      for (int g = 0; g < count; ++g) {
        float* row = weights[g];
        float block_max = row[0];
        for (int j = 1; j < length; ++j) {
          block_max = row[j] > block_max ? row[j] : block_max;
        }
        for (int j = length; j < block_positions; ++j) {
          row[j] = lowest_score;  // weight 0 below
        }
        const float new_max = first == 0 || block_max > running_max[g] ? block_max : running_max[g];
        if (first != 0) {
          const float rescale = softmax_exp(running_max[g] - new_max);
          sum[g] *= rescale;
          for (int d = 0; d < width; ++d) {
            out[g][d] *= rescale;
          }
        }
        running_max[g] = new_max;
        float lane_sum[reduction_lanes] = {};
        for (int j = 0; j < block_positions; j += reduction_lanes) {
          for (int l = 0; l < reduction_lanes; ++l) {
            row[j + l] = softmax_exp(row[j + l] - new_max);
            lane_sum[l] += row[j + l];
          }
        }
        sum[g] += sum_lanes(lane_sum);
      }
      // Four positions per pass over the accumulators: a quarter of their loads and stores.
      int j = 0;
      for (; j + 4 <= length; j += 4) {
        const float* value = cache.values + at + static_cast<std::size_t>(j) * stride;
        for (int g = 0; g < count; ++g) {
          const float* w = weights[g] + j;
          float* accumulated = out[g];
          for (int d = 0; d < width; ++d) {
            accumulated[d] += (w[0] * value[d] + w[1] * value[stride + d]) +
                              (w[2] * value[2 * stride + d] + w[3] * value[3 * stride + d]);
          }
        }
      }
      for (; j < length; ++j) {
        const float* value = cache.values + at + static_cast<std::size_t>(j) * stride;
        for (int g = 0; g < count; ++g) {
          const float weight = weights[g][j];
          float* accumulated = out[g];
          for (int d = 0; d < width; ++d) {
            accumulated[d] += weight * value[d];
          }
        }
      }
    }
    for (int g = 0; g < count; ++g) {
      for (int d = 0; d < width; ++d) {
        out[g][d] /= sum[g];
      }
    }
  }
};

}  // namespace ngemb::detail
