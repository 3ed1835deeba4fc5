#pragma once
// One logits row -> one draft token (and its q row when sampling), as every drafter with logits of its own chooses
// its proposal (spec/drafter.hpp, speculative_draws).
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/error.hpp"
#include "ngemb/core/philox.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/spec/drafter.hpp"

namespace ngemb::detail {

/// The draft for generated index request.position + index from `logits` [V] (host memory). Greedy
/// (sampling.temperature == 0): the argmax, ties to the lowest id, and `q` is not touched (it may be empty).
/// Sampling: q [V] gets token_probabilities(logits) and the token is drawn from it with the uniform of
/// speculative_draws::proposal.
inline std::int32_t draft_token(view<const float> logits, const sampling_options& sampling,
                                const draft_request& request, std::uint32_t index, view<float> q) {
  if (sampling.temperature == 0.0f) {
    return sample_token(logits, sampling, 0.0);
  }
  if (q.size() != logits.size()) {
    throw shape_mismatch("draft_token: q holds " + std::to_string(q.size()) + " values, expected one per logit (" +
                         std::to_string(logits.size()) + ")");
  }
  token_probabilities(logits, sampling, q);
  const token_stream stream{sampling.seed, request.stream, request.position + index};
  return sample_from_probabilities(view<const float>(q), stream.uniform(speculative_draws::proposal));
}

}  // namespace ngemb::detail
