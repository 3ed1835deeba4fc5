#pragma once
// Token dispatch of a MoE layer, as element operations shared by host and device: the (token, pick) pairs of a
// routing, sorted by expert (sort_pairs), become per-expert row ranges; each routed pair's input row is gathered
// into its expert's range, and the experts' outputs are combined back per token in pick order (deterministic: no
// atomics, the same sum order on every policy).
#include <cstddef>
#include <cstdint>

#include "ngemb/core/macros.hpp"

namespace ngemb::detail {

/// values[i] = i: the pair ids sort_pairs carries along with the experts.
struct iota_op {
  std::int32_t* values;

  NGEMB_HD void operator()(std::size_t i) const { values[i] = static_cast<std::int32_t>(i); }
};

/// offsets[key] = the first position in the sorted keys holding a key >= `key` (so key's pairs are
/// [offsets[key], offsets[key + 1]) and offsets[keys] = pairs): a binary search per key.
struct bucket_offsets_op {
  const std::int32_t* sorted_keys;
  std::size_t pairs;
  std::int32_t* offsets;

  NGEMB_HD void operator()(std::size_t key) const {
    std::size_t low = 0;
    std::size_t high = pairs;
    while (low < high) {
      const std::size_t middle = low + (high - low) / 2;
      if (static_cast<std::size_t>(sorted_keys[middle]) < key) {
        low = middle + 1;
      } else {
        high = middle;
      }
    }
    offsets[key] = static_cast<std::int32_t>(low);
  }
};

/// position[order[s]] = s: where each pair's expert output row lies.
struct scatter_positions_op {
  const std::int32_t* order;
  std::int32_t* position;

  NGEMB_HD void operator()(std::size_t s) const { position[order[s]] = static_cast<std::int32_t>(s); }
};

/// gathered[s, h] = x[token of pair order[s], h], for the routed pairs (the first positions: zero experts sort last).
struct gather_pair_rows_op {
  const float* x;
  const std::int32_t* order;
  std::size_t top_k;
  std::size_t hidden;
  float* gathered;

  NGEMB_HD void operator()(std::size_t i) const {
    const std::size_t s = i / hidden;
    const std::size_t token = static_cast<std::size_t>(order[s]) / top_k;
    gathered[i] = x[token * hidden + i % hidden];
  }
};

/// y[t, h] = sum over picks, in pick order, of w * FFN_e(x_t)[h] (routed: the expert's output row of the pair) or
/// the zero expert's contribution zero(w, x[t, h]).
template <class ZeroExperts>
struct combine_picks_op {
  const float* x;
  const std::int32_t* chosen;
  const float* weights;
  const std::int32_t* position;
  const float* expert_out;
  std::size_t top_k;
  std::int32_t routed_experts;
  std::size_t hidden;
  ZeroExperts zero;
  float* y;

  NGEMB_HD void operator()(std::size_t i) const {
    const std::size_t token = i / hidden;
    const std::size_t column = i % hidden;
    float sum = 0.0f;
    for (std::size_t pick = token * top_k; pick < (token + 1) * top_k; ++pick) {
      const float weight = weights[pick];
      sum += chosen[pick] < routed_experts
                 ? weight * expert_out[static_cast<std::size_t>(position[pick]) * hidden + column]
                 : zero(weight, x[i]);
    }
    y[i] = sum;
  }
};

}  // namespace ngemb::detail
