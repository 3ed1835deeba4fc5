#pragma once
// Prompt-lookup drafting (vLLM's n-gram proposer): no weights. Each sequence's known text is kept on the host; to
// propose, find the longest suffix of it (n from max_n down to min_n tokens) that also occurs earlier in it and
// propose the tokens that followed that earlier occurrence. Text that repeats (code, quoted context, lists) is then
// drafted for free.
//
// The occurrence is vLLM's (vllm/v1/spec_decode/ngram_proposer.py, _find_longest_matched_ngram_and_propose_tokens):
// the earliest one in the text among those of the longest n, which may overlap the suffix but must end before the
// last token so that at least one token follows it. The search is likewise KMP's prefix function over the reversed
// text, the pattern capped at max_n: O(T) per request for a text of T tokens, O(max_n) scratch. T grows by one or
// more tokens per step, so a long generation pays O(T) per step, as vLLM does; no index is kept across steps.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/spec/drafter.hpp"

namespace ngemb {

/// prompt_lookup_drafter::options (at namespace scope so that it can be a default argument inside the class).
struct prompt_lookup_options {
  int min_n = 1;  ///< shortest suffix to look up (>= 1)
  int max_n = 4;  ///< longest suffix to look up (>= min_n)
};

namespace detail {

/// The history of `sequence` in `histories`, const or not as the map is.
template <class Histories>
auto& prompt_lookup_history(Histories& histories, std::int32_t sequence, const char* operation) {
  const auto found = histories.find(sequence);
  if (found == histories.end()) {
    throw invalid_argument(std::string("prompt_lookup_drafter::") + operation + ": unknown sequence " +
                           std::to_string(sequence) + " (not started, or ended)");
  }
  return found->second;
}

}  // namespace detail

class prompt_lookup_drafter {
 public:
  using options = prompt_lookup_options;

  explicit prompt_lookup_drafter(std::int64_t vocab_size, options opts = {}) : vocab_size_(vocab_size), opts_(opts) {
    if (vocab_size < 1) {
      throw invalid_argument("prompt_lookup_drafter: vocab_size must be >= 1, got " + std::to_string(vocab_size));
    }
    if (opts.min_n < 1 || opts.max_n < opts.min_n) {
      throw invalid_argument("prompt_lookup_drafter: options need 1 <= min_n <= max_n, got min_n " +
                             std::to_string(opts.min_n) + ", max_n " + std::to_string(opts.max_n));
    }
  }

  [[nodiscard]] std::int64_t vocab_size() const { return vocab_size_; }
  [[nodiscard]] bool hidden_rows_needed() const { return false; }

  void start_sequence(std::int32_t sequence) {
    if (!histories_.try_emplace(sequence).second) {
      throw invalid_argument("prompt_lookup_drafter: sequence " + std::to_string(sequence) + " was already started");
    }
  }
  void end_sequence(std::int32_t sequence) {
    if (histories_.erase(sequence) == 0) {
      throw invalid_argument("prompt_lookup_drafter: end_sequence of unknown sequence " + std::to_string(sequence));
    }
  }

  /// The sequence's known text: its prompt, the tokens the target kept since, and the last `next` (not yet fed).
  [[nodiscard]] view<const std::int32_t> history(std::int32_t sequence) const {
    return detail::prompt_lookup_history(histories_, sequence, "history");
  }

  /// Appends what the target kept and the token chosen after it. A sequence with no text yet takes fed[0, kept)
  /// (the prompt); later steps must feed the previous `next` first and add fed[1, kept). The whole step is checked
  /// before any sequence changes, so a throw leaves every history as it was.
  void observe(const verified_step& step) {
    const std::size_t count = step.sequences.size();
    if (step.fed.num_sequences() != count || step.kept.size() != count || step.next.size() != count ||
        step.fed.offsets().size() != count + 1) {
      throw shape_mismatch("prompt_lookup_drafter::observe: " + std::to_string(count) + " sequences but " +
                           std::to_string(step.fed.offsets().size()) + " fed offsets, " +
                           std::to_string(step.kept.size()) + " kept, " + std::to_string(step.next.size()) + " next");
    }
    if (step.fed.offsets()[0] != 0 || static_cast<std::size_t>(step.fed.offsets()[count]) != step.fed.num_values()) {
      throw shape_mismatch("prompt_lookup_drafter::observe: fed offsets must run from 0 to " +
                           std::to_string(step.fed.num_values()));
    }
    targets_.clear();
    for (std::size_t b = 0; b < count; ++b) {
      targets_.push_back(&detail::prompt_lookup_history(histories_, step.sequences[b], "observe"));
      check_sequence(step, b, *targets_.back());
    }
    // Each check above compared fed[0] with the history before this step, so a sequence listed twice would append
    // twice from the same starting point.
    ids_.assign(step.sequences.begin(), step.sequences.end());
    std::ranges::sort(ids_);
    if (const auto twice = std::ranges::adjacent_find(ids_); twice != ids_.end()) {
      throw invalid_argument("prompt_lookup_drafter::observe: sequence " + std::to_string(*twice) +
                             " appears more than once in the step");
    }
    for (std::size_t b = 0; b < count; ++b) {
      std::vector<std::int32_t>& text = *targets_[b];
      const view<const std::int32_t> fed = step.fed.sequence(b);
      const std::size_t first = text.empty() ? 0 : 1;
      text.insert(text.end(), fed.begin() + first, fed.begin() + step.kept[b]);
      text.push_back(step.next[b]);
    }
  }

  /// Drafts per request (see the file comment); none where no suffix of min_n or more tokens recurs. q is one-hot,
  /// so `out.probabilities` stays empty, also when sampling.
  void propose(view<const draft_request> requests, const sampling_options& /*sampling*/, draft_batch& out) {
    out.clear();
    for (const draft_request& request : requests) {
      if (request.max_tokens < 1) {
        throw invalid_argument("prompt_lookup_drafter::propose: max_tokens must be >= 1, got " +
                               std::to_string(request.max_tokens) + " for sequence " +
                               std::to_string(request.sequence));
      }
      const view<const std::int32_t> text = detail::prompt_lookup_history(histories_, request.sequence, "propose");
      const std::size_t start = continuation(text);
      const std::size_t end = std::min(text.size(), start + static_cast<std::size_t>(request.max_tokens));
      out.tokens.insert(out.tokens.end(), text.begin() + start, text.begin() + end);
      out.offsets.push_back(static_cast<std::int64_t>(out.tokens.size()));
    }
  }

 private:
  /// Where the tokens following the chosen earlier occurrence start; text.size() when there is none.
  /// With r[i] = text[T-1-i], border[i] is the longest proper border of r[0, i] (KMP's prefix function), capped at
  /// max_n; `matched` is the longest prefix of r, at most max_n long, ending at r[i]: an occurrence of the suffix of
  /// that length at text[T-1-i, T-1-i+matched), which ends before the last token since matched <= i. The largest i
  /// reaching the longest match is the earliest occurrence in the text.
  [[nodiscard]] std::size_t continuation(view<const std::int32_t> text) {
    const std::size_t size = text.size();
    const auto r = [&](std::size_t i) { return text[size - 1 - i]; };
    const std::size_t cap = std::min(static_cast<std::size_t>(opts_.max_n), size);
    border_.assign(cap, 0);
    std::size_t matched = 0;
    std::size_t longest = 0;
    std::size_t at = 0;
    for (std::size_t i = 1; i < size; ++i) {
      if (matched == cap) {  // r[cap] is past the pattern: continue from the longest border of the full pattern
        matched = border_[cap - 1];
      }
      while (matched > 0 && r(i) != r(matched)) {
        matched = border_[matched - 1];
      }
      if (r(i) == r(matched)) {
        ++matched;
      }
      if (i < cap) {
        border_[i] = matched;
      }
      if (matched > 0 && matched >= longest) {
        longest = matched;
        at = i;
      }
    }
    if (longest < static_cast<std::size_t>(opts_.min_n)) {
      return size;
    }
    return size - 1 - at + longest;
  }

  void check_sequence(const verified_step& step, std::size_t b, const std::vector<std::int32_t>& text) const {
    const auto where = [&] { return "prompt_lookup_drafter::observe: sequence " + std::to_string(step.sequences[b]); };
    const view<const std::int32_t> fed = step.fed.sequence(b);
    const std::int32_t kept = step.kept[b];
    if (step.fed.size_of(b) < 1 || kept < 1 || static_cast<std::size_t>(kept) > fed.size()) {
      throw invalid_argument(where() + ": kept must be in [1, " + std::to_string(step.fed.size_of(b)) +
                             "] (the tokens fed), got " + std::to_string(kept));
    }
    for (std::size_t i = 0; i <= fed.size(); ++i) {  // fed, then next at position fed.size()
      const std::int32_t token = i < fed.size() ? fed[i] : step.next[b];
      if (token < 0 || token >= vocab_size_) {
        throw token_out_of_range(where() + ": token id " + std::to_string(token) + " at position " +
                                     std::to_string(i) + (i < fed.size() ? " of fed" : " (next)") +
                                     " is outside [0, " + std::to_string(vocab_size_) + ")",
                                 b, static_cast<std::int64_t>(i), token);
      }
    }
    if (!text.empty() && fed[0] != text.back()) {
      throw invalid_argument(where() + ": fed[0] must be the previous step's next token " +
                             std::to_string(text.back()) + ", got " + std::to_string(fed[0]));
    }
  }

  std::int64_t vocab_size_;
  options opts_;
  std::unordered_map<std::int32_t, std::vector<std::int32_t>> histories_;
  std::vector<std::size_t> border_;                  // scratch of continuation(), reused across requests
  std::vector<std::vector<std::int32_t>*> targets_;  // scratch of observe()
  std::vector<std::int32_t> ids_;                    // scratch of observe()
};

}  // namespace ngemb
