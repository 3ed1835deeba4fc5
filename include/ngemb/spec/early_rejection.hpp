#pragma once
// Early rejection (arXiv 2601.21204 §4.3): a filter over any drafter, itself a drafter. The inner drafter proposes
// [d_1..d_k]; each d_i is scored with the n-gram embedding's probability P(d_i), from the n-gram embedding row of
// the token before it through the target's final norm and lm_head (no layer), and the chain is cut before the first
// d_i with P(d_i) < threshold: tokens the n-gram embedding already finds unlikely are not worth a verify row.
//
// Scoring: one embed_ahead of [t, d_1..d_{k-1}] per sequence (batched), t the sequence's last token, then the lm_head
// over those rows (detail::ngram_chain_logits, shared with the n-gram-embedding drafter). P is the softmax of those
// logits at the request's sampling temperature when sampling, at temperature 1 when greedy; no top-k / top-p, so a
// token's score does not hinge on the cut-off of a distribution it was not drawn from. The rows stay embedded ahead,
// so the verify forward of [t, d_1..d_j] (j <= k kept) reuses all j + 1 of them; over the n-gram drafter, whose
// chains are already embedded ahead, scoring computes no embedding row at all.
//
// Sampling stays exact: where d_i ~ q_i is kept, it was drawn from q_i given that it passed, so its q row becomes
// q_i restricted to the passing tokens {v : P(v) >= threshold} and renormalised (q_i | pass). Position i then holds
// p either way: a cut hands it to the target's own sample, a kept d_i is verified against the q it came from.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/spec/drafter.hpp"
#include "ngemb/spec/ngram_drafter.hpp"

namespace ngemb {

/// What early_rejection did so far: cut / proposed is the share of the inner drafter's tokens no verify forward
/// had to feed.
struct early_rejection_counts {
  std::uint64_t proposed = 0;  ///< draft tokens the inner drafter proposed
  std::uint64_t cut = 0;       ///< of them, the ones cut before verification
};

namespace detail {

/// softmax(logits / temperature) [V] in double, into `probabilities`.
inline void ngram_softmax(view<const float> logits, double temperature, std::vector<double>& probabilities) {
  probabilities.resize(logits.size());
  float largest = logits[0];
  for (const float logit : logits) {
    largest = std::max(largest, logit);
  }
  double total = 0.0;
  for (std::size_t v = 0; v < logits.size(); ++v) {
    probabilities[v] = std::exp((static_cast<double>(logits[v]) - largest) / temperature);
    total += probabilities[v];
  }
  for (double& p : probabilities) {
    p /= total;
  }
}

}  // namespace detail

/// Filters Inner's drafts by the n-gram embedding's probability (see the file comment). Inner: any drafter over the
/// target's vocabulary (spec/drafter.hpp); Target: a causal_lm. Both must outlive the filter; start, end and observe
/// go to the inner drafter too.
template <class Inner, class Target>
class early_rejection {
 public:
  using policy_type = typename Target::policy_type;

  /// threshold in (0, 1): the least n-gram probability a draft token needs to stay in its chain.
  early_rejection(const policy_type& policy, Target& target, Inner& inner, float threshold)
      : policy_(policy), target_(target), inner_(inner), threshold_(threshold), last_("early_rejection") {
    static_assert(detail::check_drafter<Inner>());
    if (!(threshold > 0.0f && threshold < 1.0f)) {
      throw invalid_argument("early_rejection: threshold must be in (0, 1), got " + std::to_string(threshold));
    }
    if (inner.vocab_size() != target.vocab_size()) {
      throw shape_mismatch("early_rejection: the inner drafter proposes over " + std::to_string(inner.vocab_size()) +
                           " tokens, the target's vocabulary has " + std::to_string(target.vocab_size()));
    }
  }

  [[nodiscard]] std::int64_t vocab_size() const { return target_.vocab_size(); }
  [[nodiscard]] bool hidden_rows_needed() const { return inner_.hidden_rows_needed(); }
  [[nodiscard]] float threshold() const { return threshold_; }
  [[nodiscard]] early_rejection_counts counts() const { return counts_; }

  void start_sequence(std::int32_t sequence) {
    last_.require_new(sequence);
    inner_.start_sequence(sequence);
    last_.start(sequence);
  }
  void end_sequence(std::int32_t sequence) {
    last_.require_known(sequence, "end_sequence");
    inner_.end_sequence(sequence);
    last_.end(sequence);
  }
  /// The inner drafter observes first, so that a step it refuses leaves this filter unchanged too.
  void observe(const verified_step& step) {
    last_.check(step, vocab_size());
    inner_.observe(step);
    last_.apply(step);
  }

  /// The inner drafter's chains, each cut before its first token under the threshold (with its q row, and those
  /// of the tokens after it). The requests are checked before the inner drafter or the target changes.
  void propose(view<const draft_request> requests, const sampling_options& sampling, draft_batch& out) {
    sampling.validate();
    last_.check_requests(requests, target_);
    inner_.propose(requests, sampling, out);
    const auto vocab = static_cast<std::size_t>(vocab_size());
    check_inner_output(requests, out, vocab);

    sequences_.clear();
    chain_tokens_.clear();
    chain_offsets_.assign(1, 0);
    picked_.clear();
    for (std::size_t b = 0; b < requests.size(); ++b) {
      const view<const std::int32_t> drafts = out.drafts_of(b);
      if (drafts.empty()) {
        continue;
      }
      sequences_.push_back(requests[b].sequence);
      chain_tokens_.push_back(last_.of(requests[b].sequence, "propose"));
      chain_tokens_.insert(chain_tokens_.end(), drafts.begin(), drafts.end() - 1);
      chain_offsets_.push_back(static_cast<std::int64_t>(chain_tokens_.size()));
    }
    if (sequences_.empty()) {
      return;
    }
    for (std::size_t row = 0; row < chain_tokens_.size(); ++row) {
      picked_.push_back(static_cast<std::int64_t>(row));
    }
    const view<const float> logits =
        chain_logits_(policy_, target_, view<const std::int32_t>(sequences_),
                      ragged_view<const std::int32_t>(view<const std::int32_t>(chain_tokens_),
                                                      view<const std::int64_t>(chain_offsets_)),
                      view<const std::int64_t>(picked_));

    const double temperature = sampling.temperature > 0.0f ? sampling.temperature : 1.0;
    const bool with_q = !out.probabilities.empty();
    std::size_t write = 0;  // kept tokens move down over the cut ones, in place
    std::size_t chain = 0;
    std::int64_t begin = 0;
    for (std::size_t b = 0; b < requests.size(); ++b) {
      const std::int64_t end = out.offsets[b + 1];
      const auto count = static_cast<std::size_t>(end - begin);
      std::size_t kept = 0;
      for (; kept < count; ++kept) {
        const auto read = static_cast<std::size_t>(begin) + kept;
        const auto row = static_cast<std::size_t>(chain_offsets_[chain]) + kept;
        detail::ngram_softmax(logits.subview(row * vocab, vocab), temperature, probabilities_);
        const std::int32_t token = out.tokens[read];
        if (probabilities_[static_cast<std::size_t>(token)] < threshold_) {
          break;
        }
        out.tokens[write] = token;
        if (with_q) {
          restrict_q(out, read, write, vocab, token);
        }
        ++write;
      }
      counts_.proposed += count;
      counts_.cut += count - kept;
      chain += count > 0 ? 1 : 0;
      begin = end;
      out.offsets[b + 1] = static_cast<std::int64_t>(write);
    }
    out.tokens.resize(write);
    if (with_q) {
      out.probabilities.resize(write * vocab);
    }
  }

 private:
  /// One chain per request, within its max_tokens, and one q row per token or none.
  void check_inner_output(view<const draft_request> requests, const draft_batch& out, std::size_t vocab) const {
    if (out.sequences() != requests.size() || out.offsets[0] != 0 ||
        static_cast<std::size_t>(out.offsets.back()) != out.tokens.size()) {
      throw shape_mismatch("early_rejection::propose: the inner drafter returned " + std::to_string(out.sequences()) +
                           " chains over " + std::to_string(out.tokens.size()) + " tokens for " +
                           std::to_string(requests.size()) + " requests");
    }
    for (std::size_t b = 0; b < requests.size(); ++b) {
      const std::size_t count = out.drafts_of(b).size();
      if (count > static_cast<std::size_t>(requests[b].max_tokens)) {
        throw shape_mismatch("early_rejection::propose: the inner drafter proposed " + std::to_string(count) +
                             " tokens for sequence " + std::to_string(requests[b].sequence) + ", max_tokens is " +
                             std::to_string(requests[b].max_tokens));
      }
    }
    if (!out.probabilities.empty() && out.probabilities.size() != out.tokens.size() * vocab) {
      throw shape_mismatch("early_rejection::propose: the inner drafter returned " +
                           std::to_string(out.probabilities.size()) + " q values for " +
                           std::to_string(out.tokens.size()) + " tokens of " + std::to_string(vocab) +
                           " (one row per token, or none)");
    }
  }

  /// Row `write` of out.probabilities = row `read` (q of the kept token) restricted to the tokens passing the
  /// threshold under probabilities_, renormalised.
  void restrict_q(draft_batch& out, std::size_t read, std::size_t write, std::size_t vocab,
                  std::int32_t token) const {
    float* const from = out.probabilities.data() + read * vocab;
    float* const to = out.probabilities.data() + write * vocab;
    double mass = 0.0;
    for (std::size_t v = 0; v < vocab; ++v) {
      if (probabilities_[v] >= threshold_) {
        mass += from[v];
      }
    }
    if (!(from[token] > 0.0f)) {
      throw invalid_argument("early_rejection::propose: the inner drafter's q row gives its own token " +
                             std::to_string(token) + " probability " + std::to_string(from[token]));
    }
    for (std::size_t v = 0; v < vocab; ++v) {  // write <= read: a forward copy never reads what it overwrote
      to[v] = probabilities_[v] >= threshold_ ? static_cast<float>(from[v] / mass) : 0.0f;
    }
  }

  policy_type policy_;
  Target& target_;
  Inner& inner_;
  float threshold_;
  detail::ngram_last_tokens last_;
  detail::ngram_chain_logits<Target> chain_logits_;
  early_rejection_counts counts_;
  // scratch of propose(), reused across steps
  std::vector<std::int32_t> sequences_;
  std::vector<std::int32_t> chain_tokens_;
  std::vector<std::int64_t> chain_offsets_;
  std::vector<std::int64_t> picked_;
  std::vector<double> probabilities_;
};

}  // namespace ngemb
