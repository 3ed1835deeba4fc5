#pragma once
// A smaller causal_lm drafting for the target (paper §4.2: the draft model; fewer layers, a plain embedding, or the
// target's own checkpoint as a self-draft upper bound):
//
//   auto draft = presets::longcat_flash<Policy>::model::load(policy, dir, {.max_draft = k},
//                                                            {.drop_ngram_embedding = true});
//   ngemb::draft_model_drafter drafter(policy, draft);   // generation_options{.speculative = {.drafter = drafter}}
//
// The draft model runs its own sequences, one per target sequence, and lags the target by the tokens the target has
// and it has not fed ("unfed": the target's last `next`, and after a fully accepted chain also the last draft). The
// prompt goes through a plain forward at the prefill's observe(). propose() feeds the unfed tokens and then each
// draft but the last as pending tokens (one batched forward per draft index); the next observe() commits the unfed
// tokens and the accepted drafts among them and drops the rest, so accepted drafts are never fed twice.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/detail/workspace.hpp"
#include "ngemb/model/forward_options.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/spec/detail/draft_sampling.hpp"
#include "ngemb/spec/drafter.hpp"

namespace ngemb {

/// A drafter (spec/drafter.hpp) over any causal_lm-shaped draft model sharing the target's vocabulary (generate
/// checks vocab_size()). The draft model must outlive the drafter, have max_sequences for every target sequence
/// and max_draft >= every request's max_tokens (its pending tokens are the unfed ones and the drafts but the last:
/// at most max_tokens + 1). It runs under the policy given here (on a device, the stream the target runs on).
template <class Draft>
class draft_model_drafter {
 public:
  using draft_type = Draft;
  using policy_type = typename Draft::policy_type;

  draft_model_drafter(const policy_type& policy, Draft& draft_model) : policy_(policy), draft_(&draft_model) {}

  [[nodiscard]] std::int64_t vocab_size() const { return draft_->vocab_size(); }
  [[nodiscard]] bool hidden_rows_needed() const { return false; }

  /// Starts a draft-model sequence for the target's sequence `sequence` (invalid_argument when the draft model has
  /// no free sequence).
  void start_sequence(std::int32_t sequence) {
    if (states_.contains(sequence)) {
      throw invalid_argument("draft_model_drafter: sequence " + std::to_string(sequence) + " was already started");
    }
    const std::int32_t draft_sequence = draft_->start_sequence();
    states_.emplace(sequence, sequence_state{.draft = draft_sequence,
                                             .prefilled = false,
                                             .unfed = {},
                                             .unfed_pending = 0,
                                             .drafts = {}});
  }
  void end_sequence(std::int32_t sequence) {
    draft_->end_sequence(state_of(sequence, "end_sequence").draft);
    states_.erase(sequence);
  }

  /// The draft model's sequence id for the target's sequence.
  [[nodiscard]] std::int32_t draft_sequence(std::int32_t sequence) const {
    return state_of(sequence, "draft_sequence").draft;
  }
  /// The target's tokens the draft model has not fed yet (between a propose() and the next observe() they are fed
  /// as pending tokens). After each observe(), draft length + unfed = the target's committed tokens + its next.
  [[nodiscard]] view<const std::int32_t> unfed(std::int32_t sequence) const {
    return state_of(sequence, "unfed").unfed;
  }

  /// A sequence seen for the first time: its prompt fed[0, kept) goes through the draft model (one plain forward
  /// over the step's new sequences) and `next` is unfed. Later: what propose() left pending is committed up to the
  /// kept drafts that agree with the ones fed (fed[1, kept)), and the kept tokens after them and `next` become
  /// unfed. The whole step is checked before anything changes.
  void observe(const verified_step& step) {
    check_step(step);
    const std::size_t count = step.sequences.size();
    // Prompts first: the only call here that can fail on the draft model's side (a prompt past its max_positions).
    ids_.clear();
    tokens_.clear();
    offsets_.assign(1, 0);
    for (std::size_t b = 0; b < count; ++b) {
      const sequence_state& state = states_.at(step.sequences[b]);
      if (!state.prefilled) {
        const view<const std::int32_t> fed = step.fed.sequence(b);
        ids_.push_back(state.draft);
        tokens_.insert(tokens_.end(), fed.begin(), fed.begin() + step.kept[b]);
        offsets_.push_back(static_cast<std::int64_t>(tokens_.size()));
      }
    }
    if (!ids_.empty()) {
      run(false);
    }
    ids_.clear();
    kept_.clear();
    for (std::size_t b = 0; b < count; ++b) {
      sequence_state& state = states_.at(step.sequences[b]);
      const view<const std::int32_t> fed = step.fed.sequence(b);
      if (!state.prefilled) {
        state.prefilled = true;
        state.unfed.assign(1, step.next[b]);
        continue;
      }
      // fed[1, kept) are the accepted drafts; those equal to the pending drafts stay in the draft model.
      const auto accepted = fed.subview(1, static_cast<std::size_t>(step.kept[b]) - 1);
      const std::size_t agree = static_cast<std::size_t>(
          std::ranges::mismatch(accepted, state.drafts).in1 - accepted.begin());
      if (state.unfed_pending > 0) {
        ids_.push_back(state.draft);
        kept_.push_back(static_cast<std::int32_t>(state.unfed_pending + agree));
      }
      state.unfed.erase(state.unfed.begin(), state.unfed.begin() + static_cast<std::ptrdiff_t>(state.unfed_pending));
      state.unfed.insert(state.unfed.end(), accepted.begin() + static_cast<std::ptrdiff_t>(agree), accepted.end());
      state.unfed.push_back(step.next[b]);
      state.unfed_pending = 0;
      state.drafts.clear();
    }
    if (!ids_.empty()) {
      draft_->commit_pending(view<const std::int32_t>(ids_), view<const std::int32_t>(kept_));
    }
  }

  /// request.max_tokens drafts per request (fewer, or none, only where the draft model's max_positions leaves no
  /// room), one batched pending forward per draft index: the first over each sequence's unfed tokens, each later
  /// one over the previous draft. Greedy: argmax; sampling: drawn from token_probabilities with
  /// speculative_draws::proposal, q rows in out.probabilities. Drafts of an earlier propose() not yet observed are
  /// dropped first. A sequence whose unfed tokens would not fit the pending room (it skipped rounds) feeds all but
  /// the last of them in a plain forward first.
  void propose(view<const draft_request> requests, const sampling_options& sampling, draft_batch& out) {
    out.clear();
    sampling.validate();
    check_requests(requests);
    const std::size_t count = requests.size();
    drop_pending(requests);
    std::vector<int>& planned = planned_;
    planned.assign(count, 0);
    int longest = 0;
    for (std::size_t r = 0; r < count; ++r) {
      const sequence_state& state = states_.at(requests[r].sequence);
      // The draft model holds length + unfed + (drafts - 1) tokens once the last draft is chosen.
      const std::int64_t room = draft_->max_positions() - draft_->length(state.draft) -
                                static_cast<std::int64_t>(state.unfed.size()) + 1;
      planned[r] = static_cast<int>(std::clamp<std::int64_t>(room, 0, requests[r].max_tokens));
      longest = std::max(longest, planned[r]);
    }
    catch_up(requests);
    const auto vocab = static_cast<std::size_t>(vocab_size());
    const bool sampled = sampling.temperature != 0.0f;
    const auto stride = static_cast<std::size_t>(longest);
    chains_.assign(count * stride, 0);
    q_.resize(sampled ? chains_.size() * vocab : 0);
    try {
      draft(requests, sampling, stride);
    } catch (...) {
      drop_pending(requests);
      throw;
    }
    for (std::size_t r = 0; r < count; ++r) {
      const auto made = static_cast<std::ptrdiff_t>(planned[r]);
      const auto first = chains_.begin() + static_cast<std::ptrdiff_t>(r * stride);
      out.tokens.insert(out.tokens.end(), first, first + made);
      out.offsets.push_back(static_cast<std::int64_t>(out.tokens.size()));
      if (sampled) {
        const auto rows = q_.begin() + static_cast<std::ptrdiff_t>(r * stride * vocab);
        out.probabilities.insert(out.probabilities.end(), rows, rows + made * static_cast<std::ptrdiff_t>(vocab));
      }
    }
  }

 private:
  struct sequence_state {
    std::int32_t draft;                ///< the draft model's sequence
    bool prefilled = false;            ///< its prompt was observed
    std::vector<std::int32_t> unfed;   ///< the target's tokens not fed to the draft model; the last is `next`
    std::size_t unfed_pending = 0;     ///< unfed tokens fed as pending by propose() (all or none)
    std::vector<std::int32_t> drafts;  ///< drafts fed as pending by propose(), after the unfed ones
  };

  [[nodiscard]] const sequence_state& state_of(std::int32_t sequence, const char* operation) const {
    const auto found = states_.find(sequence);
    if (found == states_.end()) {
      throw invalid_argument(std::string("draft_model_drafter::") + operation + ": unknown sequence " +
                             std::to_string(sequence) + " (not started, or ended)");
    }
    return found->second;
  }

  void check_step(const verified_step& step) {
    const std::size_t count = step.sequences.size();
    if (step.fed.num_sequences() != count || step.kept.size() != count || step.next.size() != count ||
        step.fed.offsets().size() != count + 1) {
      throw shape_mismatch("draft_model_drafter::observe: " + std::to_string(count) + " sequences but " +
                           std::to_string(step.fed.offsets().size()) + " fed offsets, " +
                           std::to_string(step.kept.size()) + " kept, " + std::to_string(step.next.size()) + " next");
    }
    if (step.fed.offsets()[0] != 0 || static_cast<std::size_t>(step.fed.offsets()[count]) != step.fed.num_values()) {
      throw shape_mismatch("draft_model_drafter::observe: fed offsets must run from 0 to " +
                           std::to_string(step.fed.num_values()));
    }
    const std::int64_t vocab = vocab_size();
    for (std::size_t b = 0; b < count; ++b) {
      const sequence_state& state = state_of(step.sequences[b], "observe");
      const auto where = [&] { return "draft_model_drafter::observe: sequence " + std::to_string(step.sequences[b]); };
      const view<const std::int32_t> fed = step.fed.sequence(b);
      const std::int32_t kept = step.kept[b];
      if (fed.empty() || kept < 1 || static_cast<std::size_t>(kept) > fed.size()) {
        throw invalid_argument(where() + ": kept must be in [1, " + std::to_string(fed.size()) +
                               "] (the tokens fed), got " + std::to_string(kept));
      }
      for (std::size_t i = 0; i <= fed.size(); ++i) {  // fed, then next at position fed.size()
        const std::int32_t token = i < fed.size() ? fed[i] : step.next[b];
        if (token < 0 || token >= vocab) {
          throw token_out_of_range(where() + ": token id " + std::to_string(token) + " at position " +
                                       std::to_string(i) + (i < fed.size() ? " of fed" : " (next)") +
                                       " is outside [0, " + std::to_string(vocab) + ")",
                                   b, static_cast<std::int64_t>(i), token);
        }
      }
      if (state.prefilled && fed[0] != state.unfed.back()) {
        throw invalid_argument(where() + ": fed[0] must be the previous step's next token " +
                               std::to_string(state.unfed.back()) + ", got " + std::to_string(fed[0]));
      }
    }
    check_distinct(step.sequences, "observe");
  }

  void check_requests(view<const draft_request> requests) {
    ids_.clear();
    for (const draft_request& request : requests) {
      const sequence_state& state = state_of(request.sequence, "propose");
      if (!state.prefilled) {
        throw invalid_argument("draft_model_drafter::propose: sequence " + std::to_string(request.sequence) +
                               " has no observed prompt yet");
      }
      if (request.max_tokens < 1 || request.max_tokens > draft_->max_draft()) {
        throw invalid_argument("draft_model_drafter::propose: max_tokens = " + std::to_string(request.max_tokens) +
                               " for sequence " + std::to_string(request.sequence) + " must be in [1, " +
                               std::to_string(draft_->max_draft()) +
                               "], the draft model's max_draft (sequence_capacity::max_draft)");
      }
      ids_.push_back(request.sequence);
    }
    check_distinct(view<const std::int32_t>(ids_), "propose");
  }

  void check_distinct(view<const std::int32_t> sequences, const char* operation) {
    sorted_.assign(sequences.begin(), sequences.end());
    std::ranges::sort(sorted_);
    if (const auto twice = std::ranges::adjacent_find(sorted_); twice != sorted_.end()) {
      throw invalid_argument(std::string("draft_model_drafter::") + operation + ": sequence " +
                             std::to_string(*twice) + " appears more than once");
    }
  }

  /// Drops the pending tokens of the requests' sequences (an earlier propose() never observed, or a failed one).
  void drop_pending(view<const draft_request> requests) {
    ids_.clear();
    for (const draft_request& request : requests) {
      sequence_state& state = states_.at(request.sequence);
      if (draft_->pending(state.draft) > 0) {
        ids_.push_back(state.draft);
      }
      state.unfed_pending = 0;
      state.drafts.clear();
    }
    if (!ids_.empty()) {
      draft_->commit_pending(view<const std::int32_t>(ids_),
                             view<const std::int32_t>(std::vector<std::int32_t>(ids_.size(), 0)));
    }
  }

  /// Feeds all unfed tokens but the last, with a plain forward, of the sequences whose unfed tokens and drafts
  /// would not fit max_draft + 1 pending tokens.
  void catch_up(view<const draft_request> requests) {
    ids_.clear();
    tokens_.clear();
    offsets_.assign(1, 0);
    for (std::size_t r = 0; r < requests.size(); ++r) {
      sequence_state& state = states_.at(requests[r].sequence);
      if (planned_[r] > 0 && static_cast<int>(state.unfed.size()) + planned_[r] - 1 > draft_->max_draft() + 1) {
        ids_.push_back(state.draft);
        tokens_.insert(tokens_.end(), state.unfed.begin(), state.unfed.end() - 1);
        offsets_.push_back(static_cast<std::int64_t>(tokens_.size()));
      }
    }
    if (ids_.empty()) {
      return;
    }
    run(false);
    for (std::size_t r = 0; r < requests.size(); ++r) {
      sequence_state& state = states_.at(requests[r].sequence);
      if (planned_[r] > 0 && static_cast<int>(state.unfed.size()) + planned_[r] - 1 > draft_->max_draft() + 1) {
        state.unfed.erase(state.unfed.begin(), state.unfed.end() - 1);
      }
    }
  }

  /// The drafting loop: draft index i over the requests still drafting (planned_[r] > i), chains_ row r of `stride`.
  void draft(view<const draft_request> requests, const sampling_options& sampling, std::size_t stride) {
    const auto vocab = static_cast<std::size_t>(vocab_size());
    const bool sampled = sampling.temperature != 0.0f;
    active_.clear();
    ids_.clear();
    tokens_.clear();
    offsets_.assign(1, 0);
    for (std::size_t r = 0; r < requests.size(); ++r) {
      if (planned_[r] > 0) {
        sequence_state& state = states_.at(requests[r].sequence);
        active_.push_back(r);
        ids_.push_back(state.draft);
        tokens_.insert(tokens_.end(), state.unfed.begin(), state.unfed.end());
        offsets_.push_back(static_cast<std::int64_t>(tokens_.size()));
      }
    }
    for (std::size_t i = 0; !active_.empty(); ++i) {
      run(true);
      host_logits_.resize(active_.size() * vocab);
      copy_to_host(policy_, view<const float>(logits_.data(), host_logits_.size()), view<float>(host_logits_));
      still_.clear();
      ids_.clear();
      tokens_.clear();
      offsets_.assign(1, 0);
      for (std::size_t a = 0; a < active_.size(); ++a) {
        const std::size_t r = active_[a];
        sequence_state& state = states_.at(requests[r].sequence);
        if (i == 0) {
          state.unfed_pending = state.unfed.size();
        } else {
          state.drafts.push_back(chains_[r * stride + i - 1]);
        }
        const view<float> q = sampled ? view<float>(q_.data() + (r * stride + i) * vocab, vocab) : view<float>();
        const std::int32_t token =
            detail::draft_token(view<const float>(host_logits_.data() + a * vocab, vocab), sampling, requests[r],
                                static_cast<std::uint32_t>(i), q);
        chains_[r * stride + i] = token;
        if (static_cast<int>(i) + 1 < planned_[r]) {
          still_.push_back(r);
          ids_.push_back(state.draft);
          tokens_.push_back(token);
          offsets_.push_back(static_cast<std::int64_t>(tokens_.size()));
        }
      }
      active_.swap(still_);
    }
  }

  /// One forward of the draft model over (ids_, tokens_, offsets_), last-token logits into logits_.
  void run(bool pending) {
    const auto vocab = static_cast<std::size_t>(vocab_size());
    const view<float> logits = detail::workspace(policy_, logits_, ids_.size() * vocab);
    draft_->forward(policy_, view<const std::int32_t>(ids_),
                    ragged_view<const std::int32_t>(view<const std::int32_t>(tokens_),
                                                    view<const std::int64_t>(offsets_)),
                    logits, forward_options{.logits = logits_for::last_token, .pending = pending});
  }

  policy_type policy_;
  Draft* draft_;
  std::unordered_map<std::int32_t, sequence_state> states_;
  typename policy_type::template buffer<float> logits_;
  std::vector<float> host_logits_;
  std::vector<float> q_;                 // [requests x longest x V] q rows of propose()
  std::vector<std::int32_t> chains_;     // [requests x longest] drafts of propose()
  std::vector<int> planned_;             // drafts each request of propose() gets
  std::vector<std::size_t> active_;      // requests drafting at the current index
  std::vector<std::size_t> still_;
  std::vector<std::int32_t> ids_;        // the draft model's sequences of the next forward or commit
  std::vector<std::int32_t> tokens_;     // the next forward's tokens
  std::vector<std::int64_t> offsets_;
  std::vector<std::int32_t> kept_;
  std::vector<std::int32_t> sorted_;
};

}  // namespace ngemb
