#pragma once
// The verify step of speculative decoding, for any speculative_model: one ragged pending forward over every
// sequence's last token and its drafts (k may differ per sequence, 0 included), then the acceptance rule per chain
// (spec/acceptance.hpp). The model's tokens stay pending: the caller decides how many to keep (1 + accepted, or fewer
// when a stop token ends the sequence inside the accepted drafts) and calls model.commit_pending.
//
//   chain_verifier<Model> verifier;
//   verifier.verify(policy, model, sequences, last_tokens, drafts, streams, positions, sampling, keep_hidden);
//   for (b...) { const chain_verdict& verdict = verifier.verdicts()[b]; ... }
//   model.commit_pending(sequences, kept);
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/causal_model.hpp"
#include "ngemb/model/forward_options.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/model/stage_times.hpp"
#include "ngemb/spec/acceptance.hpp"
#include "ngemb/spec/drafter.hpp"

namespace ngemb {

template <speculative_model Model>
class chain_verifier {
 public:
  using policy_type = typename Model::policy_type;
  using sequence_id = typename Model::sequence_id;
  using token_type = typename Model::token_type;

  /// Sequence b (sequences[b], host arrays) continues with last_tokens[b] (its token not yet fed) and then
  /// drafts.drafts_of(b) (one entry per sequence, possibly empty; q rows in drafts.probabilities when sampling, or
  /// none for deterministic drafts). streams[b] and positions[b] seed its draws: the sequence's Philox stream and the
  /// index, among its generated tokens, of its first draft. keep_hidden asks the model to keep the fed tokens'
  /// final-normed rows (for a drafter's observe); `profile`, when set, takes the forward's stage times. Everything is
  /// checked before the forward.
  void verify(const policy_type& policy, Model& model, view<const sequence_id> sequences,
              view<const token_type> last_tokens, const draft_batch& drafts, view<const std::uint64_t> streams,
              view<const std::uint32_t> positions, const sampling_options& sampling, bool keep_hidden,
              stage_times* profile = nullptr) {
    const std::size_t count = sequences.size();
    if (last_tokens.size() != count || drafts.sequences() != count || streams.size() != count ||
        positions.size() != count) {
      throw shape_mismatch("chain_verifier::verify: " + std::to_string(count) + " sequences need as many last tokens, "
                           "draft chains, streams and positions; got " + std::to_string(last_tokens.size()) + ", " +
                           std::to_string(drafts.sequences()) + ", " + std::to_string(streams.size()) + ", " +
                           std::to_string(positions.size()));
    }
    const auto vocab = static_cast<std::size_t>(model.vocab_size());
    const bool has_rows = !drafts.probabilities.empty();
    if (has_rows && drafts.probabilities.size() != drafts.tokens.size() * vocab) {
      throw shape_mismatch("chain_verifier::verify: the drafts' q rows hold " +
                           std::to_string(drafts.probabilities.size()) + " values, expected " +
                           std::to_string(drafts.tokens.size()) + " drafts x V = " +
                           std::to_string(drafts.tokens.size() * vocab) + " (or none for deterministic drafts)");
    }
    fed_.clear();
    fed_offsets_.assign(1, 0);
    for (std::size_t b = 0; b < count; ++b) {
      const view<const std::int32_t> chain = drafts.drafts_of(b);
      if (static_cast<std::int64_t>(chain.size()) > model.max_draft()) {
        throw invalid_argument("chain_verifier::verify: sequence " + std::to_string(sequences[b]) + " has " +
                               std::to_string(chain.size()) + " drafts, more than the model's max_draft = " +
                               std::to_string(model.max_draft()) + " (sequence_capacity::max_draft)");
      }
      fed_.push_back(last_tokens[b]);
      fed_.insert(fed_.end(), chain.begin(), chain.end());
      fed_offsets_.push_back(static_cast<std::int64_t>(fed_.size()));
    }
    if (logits_.size() < fed_.size() * vocab) {
      logits_ = typename policy_type::template buffer<float>(policy, fed_.size() * vocab);
    }
    host_logits_.resize(fed_.size() * vocab);
    const view<float> logits = logits_.as_view().subview(0, fed_.size() * vocab);
    model.forward(policy, sequences, fed(), logits,
                  {.logits = logits_for::every_token, .profile = profile, .pending = true, .keep_hidden = keep_hidden});
    copy_to_host(policy, view<const float>(logits), view<float>(host_logits_));
    verdicts_.clear();
    for (std::size_t b = 0; b < count; ++b) {
      const auto first = static_cast<std::size_t>(fed_offsets_[b]);
      const std::size_t rows = static_cast<std::size_t>(fed_offsets_[b + 1]) - first;
      const auto first_draft = static_cast<std::size_t>(drafts.offsets[b]);
      verdicts_.push_back(verify_chain(
          view<const float>(host_logits_.data() + first * vocab, rows * vocab), drafts.drafts_of(b),
          has_rows ? view<const float>(drafts.probabilities.data() + first_draft * vocab, (rows - 1) * vocab)
                   : view<const float>(),
          sampling, streams[b], positions[b]));
    }
  }

  /// One verdict per sequence of the last verify().
  [[nodiscard]] const std::vector<chain_verdict>& verdicts() const { return verdicts_; }
  /// The tokens the last verify() fed (host): sequence b's last token, then its drafts.
  [[nodiscard]] ragged_view<const token_type> fed() const {
    return {view<const token_type>(fed_), view<const std::int64_t>(fed_offsets_)};
  }

 private:
  std::vector<token_type> fed_;
  std::vector<std::int64_t> fed_offsets_;
  typename policy_type::template buffer<float> logits_;
  std::vector<float> host_logits_;
  std::vector<chain_verdict> verdicts_;
};

}  // namespace ngemb
