#pragma once
// The n-gram-embedding drafter (arXiv 2601.21204 §4.2): the next token from the n-gram embedding's output row alone,
// through the target's final norm and lm_head, skipping every layer. The draft costs one embedding row and one
// lm_head row per token, from weights the target already holds.
//
// The rows are computed with the target's embed_ahead, so they stay embedded ahead of the sequence and the verify
// forward feeding [t, d_1..d_k] takes the k rows of [t, d_1..d_{k-1}] instead of computing them again (the paper:
// "n-gram embeddings computed while drafting are cached and reused by verification"; the target's
// embedding_counts().reused counts them).
//
// The helpers in detail (the last token per sequence, the request checks, and the n-gram logits of chain positions)
// are shared with spec/early_rejection.hpp.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/causal_lm.hpp"
#include "ngemb/model/detail/workspace.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/spec/detail/draft_sampling.hpp"
#include "ngemb/spec/drafter.hpp"

namespace ngemb {

namespace detail {

/// Per sequence, the token the target chose last (observe's next, not yet fed): the head of its draft chains.
class ngram_last_tokens {
 public:
  static constexpr std::int32_t none = -1;  ///< started, not observed yet

  explicit ngram_last_tokens(std::string owner) : owner_(std::move(owner)) {}

  void require_new(std::int32_t sequence) const {
    if (last_.contains(sequence)) {
      throw invalid_argument(owner_ + ": sequence " + std::to_string(sequence) + " was already started");
    }
  }
  void require_known(std::int32_t sequence, const char* operation) const {
    if (!last_.contains(sequence)) {
      throw invalid_argument(owner_ + "::" + operation + ": unknown sequence " + std::to_string(sequence) +
                             " (not started, or ended)");
    }
  }
  void start(std::int32_t sequence) {
    require_new(sequence);
    last_.emplace(sequence, none);
  }
  void end(std::int32_t sequence) {
    require_known(sequence, "end_sequence");
    last_.erase(sequence);
  }

  /// The sequence's last token; invalid_argument before its first observe().
  [[nodiscard]] std::int32_t of(std::int32_t sequence, const char* operation) const {
    require_known(sequence, operation);
    const std::int32_t token = last_.at(sequence);
    if (token == none) {
      throw invalid_argument(owner_ + "::" + operation + ": sequence " + std::to_string(sequence) +
                             " has no token to draft from yet (observe its prefill first)");
    }
    return token;
  }

  /// The step's shape, its sequences and its next tokens, without changing anything.
  void check(const verified_step& step, std::int64_t vocab_size) const {
    const std::size_t count = step.sequences.size();
    if (step.fed.num_sequences() != count || step.kept.size() != count || step.next.size() != count) {
      throw shape_mismatch(owner_ + "::observe: " + std::to_string(count) + " sequences but " +
                           std::to_string(step.fed.num_sequences()) + " fed, " + std::to_string(step.kept.size()) +
                           " kept, " + std::to_string(step.next.size()) + " next");
    }
    for (std::size_t b = 0; b < count; ++b) {
      require_known(step.sequences[b], "observe");
      if (step.kept[b] < 1 || step.kept[b] > step.fed.size_of(b)) {
        throw invalid_argument(owner_ + "::observe: sequence " + std::to_string(step.sequences[b]) +
                               ": kept must be in [1, " + std::to_string(step.fed.size_of(b)) +
                               "] (the tokens fed), got " + std::to_string(step.kept[b]));
      }
      if (step.next[b] < 0 || step.next[b] >= vocab_size) {
        throw invalid_argument(owner_ + "::observe: sequence " + std::to_string(step.sequences[b]) +
                               ": next token " + std::to_string(step.next[b]) + " is outside [0, " +
                               std::to_string(vocab_size) + ")");
      }
    }
  }
  /// Takes each sequence's next token (after check()).
  void apply(const verified_step& step) {
    for (std::size_t b = 0; b < step.sequences.size(); ++b) {
      last_[step.sequences[b]] = step.next[b];
    }
  }

  /// Requests a drafter over `target` can serve: max_tokens in [1, target.max_draft()] (the verify forward feeds
  /// 1 + max_tokens pending tokens), sequences known here, observed, with nothing pending in the target (the chain
  /// follows the committed tokens), each listed once.
  template <class Target>
  void check_requests(view<const draft_request> requests, const Target& target) const {
    std::vector<std::int32_t> ids;
    ids.reserve(requests.size());
    for (const draft_request& request : requests) {
      if (request.max_tokens < 1 || request.max_tokens > target.max_draft()) {
        throw invalid_argument(owner_ + "::propose: max_tokens must be in [1, " +
                               std::to_string(target.max_draft()) + "] (the target's max_draft), got " +
                               std::to_string(request.max_tokens) + " for sequence " +
                               std::to_string(request.sequence));
      }
      static_cast<void>(of(request.sequence, "propose"));
      if (const std::int32_t pending = target.pending(request.sequence); pending != 0) {
        throw invalid_argument(owner_ + "::propose: sequence " + std::to_string(request.sequence) + " has " +
                               std::to_string(pending) + " pending tokens in the target; commit_pending first");
      }
      ids.push_back(request.sequence);
    }
    std::ranges::sort(ids);
    if (const auto twice = std::ranges::adjacent_find(ids); twice != ids.end()) {
      throw invalid_argument(owner_ + "::propose: sequence " + std::to_string(*twice) + " is requested twice");
    }
  }

 private:
  std::string owner_;
  std::unordered_map<std::int32_t, std::int32_t> last_;
};

/// The n-gram logits of chain positions: embeds chains[b] ahead of sequences[b] in the target (the rows stay there
/// for the verify forward to reuse) and returns, in host memory [picked x V], the final norm and lm_head of chain
/// rows picked[j] (flat indices into chains' values): the n-gram embedding's logits of the token after each.
template <class Target>
class ngram_chain_logits {
 public:
  using policy_type = typename Target::policy_type;

  view<const float> operator()(const policy_type& policy, Target& target, view<const std::int32_t> sequences,
                               ragged_view<const std::int32_t> chains, view<const std::int64_t> picked) {
    const auto hidden = static_cast<std::size_t>(target.config().hidden_size());
    const auto vocab = static_cast<std::size_t>(target.vocab_size());
    const view<float> rows = workspace(policy, rows_, chains.num_values() * hidden);
    target.embed_ahead(policy, sequences, chains, rows);
    const view<std::int64_t> index = workspace(policy, picked_, picked.size());
    copy_to(policy, picked, index);
    const view<float> gathered = workspace(policy, gathered_, picked.size() * hidden);
    for_each_n(policy, gathered.size(), gather_last_rows_op{rows.data(), index.data(), gathered.data(), hidden});
    const view<float> logits = workspace(policy, logits_, picked.size() * vocab);
    target.head().forward(policy, picked.size(), view<const float>(gathered), logits);
    logits_host_.resize(logits.size());
    copy_to_host(policy, view<const float>(logits), view<float>(logits_host_));  // complete on return
    return view<const float>(logits_host_);
  }

 private:
  typename policy_type::template buffer<float> rows_;
  typename policy_type::template buffer<std::int64_t> picked_;
  typename policy_type::template buffer<float> gathered_;
  typename policy_type::template buffer<float> logits_;
  std::vector<float> logits_host_;
};

}  // namespace detail

/// Drafts each chain token from the n-gram embedding row of the token before it (see the file comment). Always
/// proposes max_tokens per request: max_tokens rounds, each one embed_ahead of the chains so far and one lm_head
/// over their last rows, batched over the requests still drafting. Target: a causal_lm (embed_ahead, head(),
/// max_draft(), pending()); it must outlive the drafter, and its sequences are the drafter's.
template <class Target>
class ngram_embedding_drafter {
 public:
  using policy_type = typename Target::policy_type;

  ngram_embedding_drafter(const policy_type& policy, Target& target)
      : policy_(policy), target_(target), last_("ngram_embedding_drafter") {}

  [[nodiscard]] std::int64_t vocab_size() const { return target_.vocab_size(); }
  [[nodiscard]] bool hidden_rows_needed() const { return false; }

  void start_sequence(std::int32_t sequence) { last_.start(sequence); }
  void end_sequence(std::int32_t sequence) { last_.end(sequence); }
  /// Remembers each sequence's next token, the head of its next chain.
  void observe(const verified_step& step) {
    last_.check(step, vocab_size());
    last_.apply(step);
  }

  /// max_tokens drafts per request, greedy or sampled with their q rows (spec/detail/draft_sampling.hpp). Every
  /// request is checked before the target changes; the chains [t, d_1..d_{max_tokens-1}] stay embedded ahead.
  void propose(view<const draft_request> requests, const sampling_options& sampling, draft_batch& out) {
    sampling.validate();
    last_.check_requests(requests, target_);
    out.clear();
    int longest = 0;
    for (const draft_request& request : requests) {
      out.offsets.push_back(out.offsets.back() + request.max_tokens);
      longest = std::max(longest, request.max_tokens);
    }
    out.tokens.resize(static_cast<std::size_t>(out.offsets.back()));
    const bool sampled = sampling.temperature > 0.0f;
    const auto vocab = static_cast<std::size_t>(vocab_size());
    if (sampled) {
      out.probabilities.resize(out.tokens.size() * vocab);
    }
    for (int i = 0; i < longest; ++i) {
      sequences_.clear();
      chain_tokens_.clear();
      chain_offsets_.assign(1, 0);
      picked_.clear();
      drafting_.clear();
      for (std::size_t r = 0; r < requests.size(); ++r) {
        if (requests[r].max_tokens <= i) {
          continue;
        }
        const auto first = out.tokens.begin() + out.offsets[r];
        sequences_.push_back(requests[r].sequence);
        chain_tokens_.push_back(last_.of(requests[r].sequence, "propose"));
        chain_tokens_.insert(chain_tokens_.end(), first, first + i);
        chain_offsets_.push_back(static_cast<std::int64_t>(chain_tokens_.size()));
        picked_.push_back(static_cast<std::int64_t>(chain_tokens_.size()) - 1);
        drafting_.push_back(r);
      }
      const view<const float> logits =
          chain_logits_(policy_, target_, view<const std::int32_t>(sequences_),
                        ragged_view<const std::int32_t>(view<const std::int32_t>(chain_tokens_),
                                                        view<const std::int64_t>(chain_offsets_)),
                        view<const std::int64_t>(picked_));
      for (std::size_t j = 0; j < drafting_.size(); ++j) {
        const std::size_t r = drafting_[j];
        const auto slot = static_cast<std::size_t>(out.offsets[r] + i);
        const view<float> q = sampled ? view<float>(out.probabilities.data() + slot * vocab, vocab) : view<float>();
        out.tokens[slot] = detail::draft_token(logits.subview(j * vocab, vocab), sampling, requests[r],
                                               static_cast<std::uint32_t>(i), q);
      }
    }
  }

 private:
  policy_type policy_;
  Target& target_;
  detail::ngram_last_tokens last_;
  detail::ngram_chain_logits<Target> chain_logits_;
  // scratch of propose(), reused across steps
  std::vector<std::int32_t> sequences_;
  std::vector<std::int32_t> chain_tokens_;
  std::vector<std::int64_t> chain_offsets_;
  std::vector<std::int64_t> picked_;
  std::vector<std::size_t> drafting_;
};

}  // namespace ngemb
