#pragma once
// The element operations of one MLA layer's step, shared by host and device (model/mla_attention.hpp sequences
// them with the GEMMs). Layouts, T = the step's tokens, S = splits of the absorbed form:
//   q            [T][heads][nope + rope]     the query projection's output
//   query_nope   [heads][T][nope]            scaled, head-major so each head's absorption is one GEMM
//   query_rope   [T][heads][rope]            scaled and rotated
//   kv           [T][latent + rope]          kv_a_proj_with_mqa's output
//   cache row    [latent + rope]             the normed, scaled c_kv and the rotated k_rope of one position
//   query_latent [heads][T][latent]          query_nope times kv_b_proj's K half (absorbed form)
//   query        [T][heads][latent + rope]   scaled [query_latent, query_rope]: a sequence's rows are one GEMM's A
//   states       [S][T][heads][2 + latent]   per split: sum of weights, running max, weighted sum of c_kv
//   latent_context [heads][T][latent]        softmax-weighted cache rows (absorbed form)
//   expanded     [rows][heads][nope + v]     kv_b_proj of the gathered cache rows (expanded form)
#include <cstddef>
#include <cstdint>

#include "ngemb/core/macros.hpp"
#include "ngemb/model/detail/kv_layout.hpp"
#include "ngemb/model/detail/lane_math.hpp"
#include "ngemb/model/rotary.hpp"

namespace ngemb::detail {

struct mla_dims {
  int heads;
  int nope;
  int rope;
  int v;
  int latent;  ///< kv_lora_rank

  NGEMB_HD int query_width() const { return nope + rope; }
  NGEMB_HD int cache_width() const { return latent + rope; }
  NGEMB_HD int expanded_width() const { return nope + v; }
};

/// The latent cache: [layers][slots][max_positions][latent + rope] of Element.
template <class Element>
struct latent_storage {
  Element* values;
  std::size_t slots;
  std::int64_t max_positions;
  int width;  ///< latent + rope

  NGEMB_HD std::size_t offset(int layer, std::int32_t slot, std::int64_t position) const {
    const std::size_t sequence = static_cast<std::size_t>(layer) * slots + static_cast<std::size_t>(slot);
    return (sequence * static_cast<std::size_t>(max_positions) + static_cast<std::size_t>(position)) *
           static_cast<std::size_t>(width);
  }
};

/// Index over elements of [rows x width]: y += bias per column.
struct add_bias_op {
  float* y;
  const float* bias;
  std::size_t width;

  NGEMB_HD void operator()(std::size_t index) const { y[index] += bias[index % width]; }
};

/// Index (token, head): the query's LoRA scaling, nope part into query_nope, rope part rotated into query_rope.
struct prepare_query_op {
  const float* q;
  mla_dims dims;
  std::size_t tokens;
  const token_place* plan;
  float scale;
  interleaved_rotary rotary;
  float* query_nope;
  float* query_rope;

  NGEMB_HD void operator()(std::size_t index) const {
    const std::size_t token = index / static_cast<std::size_t>(dims.heads);
    const auto head = static_cast<std::size_t>(index % static_cast<std::size_t>(dims.heads));
    const float* in = q + index * static_cast<std::size_t>(dims.query_width());
    float* nope = query_nope + (head * tokens + token) * static_cast<std::size_t>(dims.nope);
    for (int d = 0; d < dims.nope; ++d) {
      nope[d] = in[d] * scale;
    }
    rotary.apply(in + dims.nope, query_rope + index * static_cast<std::size_t>(dims.rope), plan[token].position, scale);
  }
};

/// Index token: kv_a_layernorm on the latent c_kv times its LoRA scaling, and the rotated k_rope, stored in the
/// cache at the token's slot and position.
template <class Element>
struct store_latent_op {
  const float* kv;
  const float* norm_weight;
  float eps;
  float scale;
  mla_dims dims;
  const token_place* plan;
  latent_storage<Element> cache;
  int layer;
  interleaved_rotary rotary;

  NGEMB_HD void operator()(std::size_t token) const {
    const float* in = kv + token * static_cast<std::size_t>(dims.cache_width());
    const token_place place = plan[token];
    Element* out = cache.values + cache.offset(layer, place.slot, place.position);
    float sum_of_squares = 0.0f;
    for (int i = 0; i < dims.latent; ++i) {
      sum_of_squares += in[i] * in[i];
    }
    const float inverse_rms = 1.0f / ::sqrtf(sum_of_squares / static_cast<float>(dims.latent) + eps);
    for (int i = 0; i < dims.latent; ++i) {
      out[i] = Element(norm_weight[i] * (in[i] * inverse_rms) * scale);
    }
    rotary.apply(in + dims.latent, out + dims.latent, place.position);
  }
};

/// Index (token, head) of the absorbed form: the row the scores GEMM multiplies with the cache rows, query
/// [T][heads][latent + rope] = softmax scale * [query_latent, query_rope].
struct absorbed_query_op {
  const float* query_latent;
  const float* query_rope;
  mla_dims dims;
  std::size_t tokens;
  float scale;
  float* query;

  NGEMB_HD void operator()(std::size_t index) const {
    const std::size_t token = index / static_cast<std::size_t>(dims.heads);
    const auto head = static_cast<std::size_t>(index % static_cast<std::size_t>(dims.heads));
    const float* latent = query_latent + (head * tokens + token) * static_cast<std::size_t>(dims.latent);
    const float* rope = query_rope + index * static_cast<std::size_t>(dims.rope);
    float* out = query + index * static_cast<std::size_t>(dims.cache_width());
    for (int d = 0; d < dims.latent; ++d) {
      out[d] = scale * latent[d];
    }
    for (int d = 0; d < dims.rope; ++d) {
      out[dims.latent + d] = scale * rope[d];
    }
  }
};

/// Index row (token i of a sequence's step tokens, head) of one chunk of cache rows in the absorbed form: the
/// online softmax step. Turns the row's scores into weights exp(score - running max), 0 past the token's position
/// (causal mask), and updates its state [sum of weights, running max] in partial rows [2 + latent]; rescale[row]
/// is what the row's weighted sum so far must be multiplied by (0: nothing summed yet).
struct chunk_softmax_op {
  float* scores;              ///< [rows][length]
  std::int64_t length;
  int heads;
  std::int64_t first_offset;  ///< the sequence's first step token's position minus the chunk's first position
  bool first_chunk;           ///< of the split: the states start empty
  float* states;              ///< [rows][2 + latent]
  int latent;
  float* rescale;             ///< [rows]

  NGEMB_HD void operator()(std::size_t row) const {
    const auto token = static_cast<std::int64_t>(row / static_cast<std::size_t>(heads));
    const std::int64_t reach = first_offset + token + 1;
    const std::int64_t attended = reach < 0 ? 0 : (reach < length ? reach : length);
    float* score = scores + row * static_cast<std::size_t>(length);
    float* state = states + row * static_cast<std::size_t>(latent + 2);
    const bool started = !first_chunk && state[0] > 0.0f;
    if (attended == 0) {
      for (std::int64_t j = 0; j < length; ++j) {
        score[j] = 0.0f;
      }
      if (!started) {
        state[0] = 0.0f;
        state[1] = 0.0f;
      }
      rescale[row] = started ? 1.0f : 0.0f;
      return;
    }
    float chunk_max = score[0];
    for (std::int64_t j = 1; j < attended; ++j) {
      chunk_max = score[j] > chunk_max ? score[j] : chunk_max;
    }
    const float running_max = started && state[1] > chunk_max ? state[1] : chunk_max;
    const float factor = started ? softmax_exp(state[1] - running_max) : 0.0f;
    float lane_sum[reduction_lanes] = {};
    std::int64_t j = 0;
    for (; j + reduction_lanes <= attended; j += reduction_lanes) {
      for (int l = 0; l < reduction_lanes; ++l) {
        score[j + l] = softmax_exp(score[j + l] - running_max);
        lane_sum[l] += score[j + l];
      }
    }
    float sum = sum_lanes(lane_sum);
    for (; j < attended; ++j) {
      score[j] = softmax_exp(score[j] - running_max);
      sum += score[j];
    }
    for (std::int64_t j = attended; j < length; ++j) {
      score[j] = 0.0f;
    }
    state[0] = (started ? state[0] * factor : 0.0f) + sum;
    state[1] = running_max;
    rescale[row] = factor;
  }
};

/// Index row of a chunk in the absorbed form: the row's weighted sum of c_kv (state + 2) rescaled to the new running
/// max, plus the chunk's (weights x c_kv, `chunk_sum` [rows][latent]).
struct accumulate_chunk_op {
  float* states;  ///< [rows][2 + latent]
  const float* chunk_sum;
  const float* rescale;
  int latent;

  NGEMB_HD void operator()(std::size_t row) const {
    float* sum = states + row * static_cast<std::size_t>(latent + 2) + 2;
    const float* add = chunk_sum + row * static_cast<std::size_t>(latent);
    const float factor = rescale[row];
    if (factor == 0.0f) {  // the first contribution: the row holds nothing yet (perhaps not even numbers)
      for (int d = 0; d < latent; ++d) {
        sum[d] = add[d];
      }
      return;
    }
    for (int d = 0; d < latent; ++d) {
      sum[d] = sum[d] * factor + add[d];
    }
  }
};

/// Index (token, head): merges the token's split states [splits][T][heads][2 + latent] into latent_context
/// [heads][T][latent] (log-sum-exp rescaling). A token reads the splits up to its own position's, each of which
/// attends to at least its first position, so every one it reads holds a sum >= 1.
struct merge_splits_op {
  const float* states;
  mla_dims dims;
  std::size_t tokens;
  const token_place* plan;
  std::int64_t split_positions;
  float* latent_context;

  NGEMB_HD void operator()(std::size_t index) const {
    const std::size_t token = index / static_cast<std::size_t>(dims.heads);
    const auto head = static_cast<std::size_t>(index % static_cast<std::size_t>(dims.heads));
    const auto stride = static_cast<std::size_t>(dims.latent + 2);
    const auto splits = static_cast<std::size_t>(plan[token].position / split_positions + 1);
    const auto state = [&](std::size_t split) {
      return states + ((split * tokens + token) * static_cast<std::size_t>(dims.heads) + head) * stride;
    };
    float overall_max = state(0)[1];
    for (std::size_t split = 1; split < splits; ++split) {
      overall_max = state(split)[1] > overall_max ? state(split)[1] : overall_max;
    }
    float* out = latent_context + (head * tokens + token) * static_cast<std::size_t>(dims.latent);
    float total = 0.0f;
    for (std::size_t split = 0; split < splits; ++split) {
      const float* s = state(split);
      const float weight = ::expf(s[1] - overall_max);
      total += s[0] * weight;
      for (int d = 0; d < dims.latent; ++d) {
        out[d] = (split == 0 ? 0.0f : out[d]) + weight * s[2 + d];
      }
    }
    for (int d = 0; d < dims.latent; ++d) {
      out[d] /= total;
    }
  }
};

/// Index (head, token): head_values [heads][T][v] into context [T][heads][v], o_proj's input.
struct heads_to_tokens_op {
  const float* head_values;
  mla_dims dims;
  std::size_t tokens;
  float* context;

  NGEMB_HD void operator()(std::size_t index) const {
    const std::size_t head = index / tokens;
    const std::size_t token = index % tokens;
    const float* in = head_values + index * static_cast<std::size_t>(dims.v);
    float* out = context + (token * static_cast<std::size_t>(dims.heads) + head) * static_cast<std::size_t>(dims.v);
    for (int d = 0; d < dims.v; ++d) {
      out[d] = in[d];
    }
  }
};

/// Index row: the cache row of rows[row]'s c_kv as fp32 into gathered [rows][latent] (expanded form).
template <class Element>
struct gather_latent_op {
  const token_place* rows;
  latent_storage<const Element> cache;
  int layer;
  int latent;
  float* gathered;

  NGEMB_HD void operator()(std::size_t row) const {
    const Element* in = cache.values + cache.offset(layer, rows[row].slot, rows[row].position);
    float* out = gathered + row * static_cast<std::size_t>(latent);
    for (int d = 0; d < latent; ++d) {
      out[d] = static_cast<float>(in[d]);
    }
  }
};

/// Index (token, head) of the expanded form: softmax(scale * (q_nope . k_nope + q_rope . k_rope)) over positions
/// [0, position] of the token's sequence, whose k_nope and v are expanded rows first_row[token] + position, times v.
template <class Element>
struct expanded_attention_op {
  const float* query_nope;
  const float* query_rope;
  const float* expanded;
  const std::int64_t* first_row;
  mla_dims dims;
  std::size_t tokens;
  const token_place* plan;
  latent_storage<const Element> cache;
  int layer;
  float scale;
  float* context;  ///< [T][heads][v]

  NGEMB_HD void operator()(std::size_t index) const {
    const std::size_t token = index / static_cast<std::size_t>(dims.heads);
    const auto head = static_cast<std::size_t>(index % static_cast<std::size_t>(dims.heads));
    const float* nope = query_nope + (head * tokens + token) * static_cast<std::size_t>(dims.nope);
    const float* rope = query_rope + index * static_cast<std::size_t>(dims.rope);
    const token_place place = plan[token];
    float* out = context + index * static_cast<std::size_t>(dims.v);
    for (int d = 0; d < dims.v; ++d) {
      out[d] = 0.0f;
    }
    const std::size_t row_width = static_cast<std::size_t>(dims.heads) * static_cast<std::size_t>(dims.expanded_width());
    float running_max = 0.0f;
    float sum = 0.0f;
    for (std::int64_t position = 0; position <= place.position; ++position) {
      const float* key = expanded + static_cast<std::size_t>(first_row[token] + position) * row_width +
                         head * static_cast<std::size_t>(dims.expanded_width());
      const Element* rotated = cache.values + cache.offset(layer, place.slot, position) + dims.latent;
      const float score =
          scale * (dot_widened(nope, key, dims.nope) + dot_widened(rope, rotated, dims.rope));
      const float previous_max = position == 0 ? score : running_max;
      running_max = score > previous_max ? score : previous_max;
      const float rescale = ::expf(previous_max - running_max);
      const float weight = ::expf(score - running_max);
      sum = sum * rescale + weight;
      const float* value = key + dims.nope;
      for (int d = 0; d < dims.v; ++d) {
        out[d] = out[d] * rescale + weight * value[d];
      }
    }
    for (int d = 0; d < dims.v; ++d) {
      out[d] /= sum;
    }
  }
};

}  // namespace ngemb::detail
