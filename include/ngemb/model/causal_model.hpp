#pragma once
// What generation asks of a model: `causal_model` (sequences, a ragged forward, sizes) and, for speculative
// decoding, `speculative_model` (pending steps committed to a prefix, hidden rows for drafters). causal_lm models
// both.
#include <concepts>
#include <cstdint>

#include "ngemb/core/views.hpp"
#include "ngemb/model/forward_options.hpp"

namespace ngemb {

/// What generate() needs of a model: sequences it starts and ends, a forward over a ragged batch of them that can
/// write only each sequence's last-token logits, its vocabulary size and how long a sequence may grow.
template <class M>
concept causal_model = requires {
  typename M::policy_type;
  typename M::token_type;
  typename M::sequence_id;
} && requires(M& model, const M& constant, const typename M::policy_type& policy, typename M::sequence_id sequence,
              view<const typename M::sequence_id> sequences, ragged_view<const typename M::token_type> tokens,
              view<float> logits, const forward_options& options) {
  { model.start_sequence() } -> std::same_as<typename M::sequence_id>;
  model.end_sequence(sequence);
  model.forward(policy, sequences, tokens, logits, options);
  { constant.vocab_size() } -> std::convertible_to<std::int64_t>;
  { constant.max_positions() } -> std::convertible_to<std::int64_t>;
};

/// A causal model that can verify drafts: forward_options::pending steps, then commit_pending keeping a prefix of
/// each sequence's pending tokens; its length and the most drafts a step may verify (max_draft).
template <class M>
concept speculative_model =
    causal_model<M> && requires(M& model, const M& constant, typename M::sequence_id sequence,
                                view<const typename M::sequence_id> sequences, view<const std::int32_t> kept) {
      model.commit_pending(sequences, kept);
      { constant.max_draft() } -> std::convertible_to<int>;
      { constant.length(sequence) } -> std::convertible_to<std::int64_t>;
    };

}  // namespace ngemb
