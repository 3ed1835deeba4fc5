#pragma once
// LongCat's MTP module (model/mtp.hpp) as a drafter (paper §4; the deployed LongCat-Flash drafts 3 tokens with it).
// The module's row at position t reads h_t, the target's final-normed hidden row of the token at t, and its own
// embedding of the token at t+1; the lm_head logits of its output row draft the token at t+2. Drafting goes on
// autoregressively from there, the module's own output row standing in for h.
//
//   auto model = presets::longcat_flash_lite<host_policy>::model::load(policy, dir, capacity, {.mtp = true});
//   ngemb::mtp_drafter drafter(policy, model);       // generation_options{.speculative = ..., .drafter = drafter}
//
// State: the module's own cache, one slot per target sequence, which always holds the true pairs (h_t, x_{t+1}) of
// the target's committed tokens (so it is as long as the target's committed sequence), and each sequence's last
// output row, from which its next first draft comes. observe() appends the step's true pairs in one batched module
// step; propose() drafts at the positions after them and truncates them away again, so they are recomputed from the
// target's rows once the target has verified the drafts.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/detail/workspace.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/spec/detail/draft_sampling.hpp"
#include "ngemb/spec/drafter.hpp"

namespace ngemb {

namespace detail {

/// out row to[r] = in row from[r] for every listed row r; the index arrays are in policy memory.
struct move_rows_op {
  const float* in;
  const std::int64_t* from;
  float* out;
  const std::int64_t* to;
  std::size_t width;
  NGEMB_HD void operator()(std::size_t i) const {
    const std::size_t r = i / width;
    out[static_cast<std::size_t>(to[r]) * width + i % width] =
        in[static_cast<std::size_t>(from[r]) * width + i % width];
  }
};

}  // namespace detail

/// A drafter (spec/drafter.hpp) over a causal_lm holding its MTP module (load_options{.mtp = true}). It keeps a
/// reference to the target and runs under the policy the target runs under (on a device, the same stream: observe()
/// reads the target's hidden_rows() in stream order).
template <class Target>
class mtp_drafter {
  static_assert(Target::can_hold_mtp, "mtp_drafter: the target's model type has no MTP part (causal_lm<..., Mtp>)");

 public:
  using target_type = Target;
  using policy_type = typename Target::policy_type;
  using mtp_type = typename Target::mtp_type;
  using cache_type = typename mtp_type::cache_type;

  /// invalid_argument when the target holds no MTP module.
  mtp_drafter(const policy_type& policy, Target& target)
      : policy_(policy),
        target_(&checked_target(target)),
        cache_(mtp_type::make_cache(policy, target.config(), target.max_sequences(), target.max_positions())),
        width_(static_cast<std::size_t>(target.config().hidden_size())),
        last_rows_(policy, target.max_sequences() * width_) {}

  [[nodiscard]] std::int64_t vocab_size() const { return target_->vocab_size(); }
  /// Always: every row the module reads at observe() is one of the target's final-normed rows.
  [[nodiscard]] bool hidden_rows_needed() const { return true; }

  /// Takes a slot of the module's cache for the target's sequence `sequence`.
  void start_sequence(std::int32_t sequence) {
    if (sequences_.contains(sequence)) {
      throw invalid_argument("mtp_drafter: sequence " + std::to_string(sequence) + " was already started");
    }
    const slot_id slot = cache_.allocate();
    sequences_.emplace(sequence, sequence_state{slot, false});
  }
  void end_sequence(std::int32_t sequence) {
    cache_.free(state_of(sequence, "end_sequence").slot);
    sequences_.erase(sequence);
  }

  /// Positions the module's cache holds for the sequence: its true pairs, as many as the target's committed tokens
  /// after each observe().
  [[nodiscard]] std::int64_t length(std::int32_t sequence) const {
    return cache_.length(state_of(sequence, "length").slot);
  }

  /// Runs the step's true pairs through the module: for sequence b, (h of fed[i], the token after fed[i]) for
  /// i < kept[b], the token after being fed[i+1], or next[b] for the last kept one; h from target.hidden_rows()
  /// (fed order). Everything is checked before the cache changes.
  void observe(const verified_step& step) {
    check_step(step);
    const std::size_t count = step.sequences.size();
    slots_.clear();
    sizes_.clear();
    tokens_.clear();
    indices_.clear();
    std::int64_t rows = 0;
    for (std::size_t b = 0; b < count; ++b) {
      slots_.push_back(sequences_.at(step.sequences[b]).slot);
      sizes_.push_back(step.kept[b]);
      const view<const std::int32_t> fed = step.fed.sequence(b);
      for (std::int32_t i = 0; i < step.kept[b]; ++i) {
        tokens_.push_back(i + 1 < step.kept[b] ? fed[static_cast<std::size_t>(i) + 1] : step.next[b]);
        indices_.push_back(step.fed.offsets()[b] + i);  // from: the fed token's hidden row
      }
      rows += step.kept[b];
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      indices_.push_back(r);  // to: the module's step rows in order
    }
    const auto total = static_cast<std::size_t>(rows);
    const view<float> hidden = detail::workspace(policy_, hidden_, total * width_);
    const view<float> embedded = detail::workspace(policy_, embedded_, total * width_);
    const view<float> out = detail::workspace(policy_, out_, total * width_);
    move_rows(target_->hidden_rows(), hidden, total);
    mtp_type& mtp = target_->mtp();
    mtp.embed(policy_, view<const std::int32_t>(tokens_), embedded);
    cache_.begin(policy_, view<const slot_id>(slots_), view<const std::int64_t>(sizes_));
    mtp.forward(policy_, cache_, view<const float>(hidden), view<const float>(embedded), out);
    cache_.commit();

    indices_.clear();  // each sequence's last row, to its slot's row of last_rows_
    std::int64_t end = 0;
    for (std::size_t b = 0; b < count; ++b) {
      end += step.kept[b];
      indices_.push_back(end - 1);
    }
    for (std::size_t b = 0; b < count; ++b) {
      indices_.push_back(slots_[b]);
    }
    move_rows(view<const float>(out), last_rows_.as_view(), count);
    for (std::size_t b = 0; b < count; ++b) {
      sequences_.at(step.sequences[b]).observed = true;
    }
  }

  /// Up to request.max_tokens drafts per request: the first from the lm_head logits of the sequence's last row, each
  /// next one from the module run on the previous row and draft at the following position (one batched module step
  /// per draft index over the requests still drafting). Greedy: argmax; sampling: drawn from token_probabilities
  /// with speculative_draws::proposal, q rows in out.probabilities. The draft positions are dropped from the cache
  /// before returning, also when it throws.
  void propose(view<const draft_request> requests, const sampling_options& sampling, draft_batch& out) {
    out.clear();
    sampling.validate();
    check_requests(requests);
    const std::size_t count = requests.size();
    if (count == 0) {
      return;
    }
    int longest = 0;
    committed_.clear();
    active_.clear();
    for (std::size_t r = 0; r < count; ++r) {
      longest = std::max(longest, requests[r].max_tokens);
      committed_.push_back(cache_.length(sequences_.at(requests[r].sequence).slot));
      active_.push_back(r);
    }
    const auto vocab = static_cast<std::size_t>(vocab_size());
    const bool sampled = sampling.temperature != 0.0f;
    drafts_.assign(count * static_cast<std::size_t>(longest), 0);
    q_.resize(sampled ? drafts_.size() * vocab : 0);
    try {
      draft(requests, sampling, static_cast<std::size_t>(longest));
    } catch (...) {
      drop_draft_positions(requests);
      throw;
    }
    drop_draft_positions(requests);
    for (std::size_t r = 0; r < count; ++r) {
      const auto made = static_cast<std::size_t>(requests[r].max_tokens);
      const auto first = drafts_.begin() + static_cast<std::ptrdiff_t>(r * static_cast<std::size_t>(longest));
      out.tokens.insert(out.tokens.end(), first, first + static_cast<std::ptrdiff_t>(made));
      out.offsets.push_back(static_cast<std::int64_t>(out.tokens.size()));
      if (sampled) {
        const auto rows = q_.begin() + static_cast<std::ptrdiff_t>(r * static_cast<std::size_t>(longest) * vocab);
        out.probabilities.insert(out.probabilities.end(), rows, rows + static_cast<std::ptrdiff_t>(made * vocab));
      }
    }
  }

 private:
  using slot_id = typename cache_type::slot_id;

  struct sequence_state {
    slot_id slot;
    bool observed;  ///< has a last row: observe() ran for it since start_sequence
  };

  static Target& checked_target(Target& target) {
    if (!target.has_mtp()) {
      throw invalid_argument(
          "mtp_drafter: the target holds no MTP module; load the model with load_options{.mtp = true}");
    }
    return target;
  }

  const sequence_state& state_of(std::int32_t sequence, const char* operation) const {
    const auto found = sequences_.find(sequence);
    if (found == sequences_.end()) {
      throw invalid_argument(std::string("mtp_drafter::") + operation + ": unknown sequence " +
                             std::to_string(sequence) + " (not started, or ended)");
    }
    return found->second;
  }

  /// Rows `rows` of `out` from `in` as indices_ lists them: `rows` sources, then `rows` destinations.
  void move_rows(view<const float> in, view<float> out, std::size_t rows) {
    const view<std::int64_t> staged = detail::workspace(policy_, staged_indices_, 2 * rows);
    copy_to(policy_, view<const std::int64_t>(indices_.data(), 2 * rows), staged);
    for_each_n(policy_, rows * width_,
               detail::move_rows_op{in.data(), staged.data(), out.data(), staged.data() + rows, width_});
  }

  /// Draft index 0 from each request's last row; index i > 0 from the module step at the positions after the
  /// committed ones, for the requests with max_tokens > i.
  void draft(view<const draft_request> requests, const sampling_options& sampling, std::size_t longest) {
    const std::size_t count = requests.size();
    indices_.clear();
    for (std::size_t r = 0; r < count; ++r) {
      indices_.push_back(sequences_.at(requests[r].sequence).slot);
    }
    for (std::size_t r = 0; r < count; ++r) {
      indices_.push_back(static_cast<std::int64_t>(r));
    }
    view<float> rows = detail::workspace(policy_, out_, count * width_);
    move_rows(view<const float>(last_rows_.as_view()), rows, count);
    choose(requests, sampling, 0, longest, rows);
    for (std::size_t index = 1; index < longest; ++index) {
      // rows holds the previous index's rows in active_ order; the requests drafting on keep theirs, in order.
      indices_.clear();
      tokens_.clear();
      slots_.clear();
      sizes_.clear();
      std::size_t kept = 0;
      for (std::size_t a = 0; a < active_.size(); ++a) {
        const std::size_t r = active_[a];
        if (static_cast<std::size_t>(requests[r].max_tokens) > index) {
          active_[kept++] = r;
          indices_.push_back(static_cast<std::int64_t>(a));
          tokens_.push_back(drafts_[r * longest + index - 1]);
          slots_.push_back(sequences_.at(requests[r].sequence).slot);
          sizes_.push_back(1);
        }
      }
      active_.resize(kept);
      if (kept == 0) {
        return;
      }
      for (std::size_t a = 0; a < kept; ++a) {
        indices_.push_back(static_cast<std::int64_t>(a));
      }
      const view<float> hidden = detail::workspace(policy_, hidden_, kept * width_);
      const view<float> embedded = detail::workspace(policy_, embedded_, kept * width_);
      move_rows(view<const float>(rows), hidden, kept);
      mtp_type& mtp = target_->mtp();
      mtp.embed(policy_, view<const std::int32_t>(tokens_), embedded);
      cache_.begin(policy_, view<const slot_id>(slots_), view<const std::int64_t>(sizes_));
      rows = out_.as_view().subview(0, kept * width_);
      mtp.forward(policy_, cache_, view<const float>(hidden), view<const float>(embedded), rows);
      cache_.commit();
      choose(requests, sampling, index, longest, rows);
    }
  }

  /// Draft `index` of each request in active_ from the lm_head logits of its row of `rows` (active_ order).
  void choose(view<const draft_request> requests, const sampling_options& sampling, std::size_t index,
              std::size_t longest, view<float> rows) {
    const std::size_t count = active_.size();
    const auto vocab = static_cast<std::size_t>(vocab_size());
    const view<float> logits = detail::workspace(policy_, logits_, count * vocab);
    target_->head().forward_normed(policy_, count, view<const float>(rows), logits);
    logits_host_.resize(count * vocab);
    copy_to_host(policy_, view<const float>(logits), view<float>(logits_host_));
    for (std::size_t a = 0; a < count; ++a) {
      const std::size_t r = active_[a];
      const std::size_t slot = r * longest + index;
      const view<float> q = q_.empty() ? view<float>() : view<float>(q_.data() + slot * vocab, vocab);
      drafts_[slot] = detail::draft_token(view<const float>(logits_host_.data() + a * vocab, vocab), sampling,
                                          requests[r], static_cast<std::uint32_t>(index), q);
    }
  }

  void drop_draft_positions(view<const draft_request> requests) {
    for (std::size_t r = 0; r < requests.size(); ++r) {
      cache_.truncate(sequences_.at(requests[r].sequence).slot, committed_[r]);
    }
  }

  void check_step(const verified_step& step) const {
    const std::size_t count = step.sequences.size();
    if (step.fed.num_sequences() != count || step.kept.size() != count || step.next.size() != count ||
        step.fed.offsets().size() != count + 1) {
      throw shape_mismatch("mtp_drafter::observe: " + std::to_string(count) + " sequences but " +
                           std::to_string(step.fed.offsets().size()) + " fed offsets, " +
                           std::to_string(step.kept.size()) + " kept, " + std::to_string(step.next.size()) + " next");
    }
    if (step.fed.offsets()[0] != 0 || static_cast<std::size_t>(step.fed.offsets()[count]) != step.fed.num_values()) {
      throw shape_mismatch("mtp_drafter::observe: fed offsets must run from 0 to " +
                           std::to_string(step.fed.num_values()));
    }
    const std::size_t expected = step.fed.num_values() * width_;
    if (target_->hidden_rows().size() != expected) {
      throw shape_mismatch("mtp_drafter::observe: the target's hidden_rows() hold " +
                           std::to_string(target_->hidden_rows().size()) + " values, expected " +
                           std::to_string(expected) + " (the " + std::to_string(step.fed.num_values()) +
                           " fed tokens x hidden size " + std::to_string(width_) +
                           "): run the target's forward with forward_options::keep_hidden");
    }
    for (std::size_t b = 0; b < count; ++b) {
      const std::int32_t sequence = step.sequences[b];
      const auto where = [&] { return "mtp_drafter::observe: sequence " + std::to_string(sequence); };
      const sequence_state& state = state_of(sequence, "observe");
      for (std::size_t other = 0; other < b; ++other) {
        if (step.sequences[other] == sequence) {
          throw invalid_argument(where() + " appears more than once in the step");
        }
      }
      const view<const std::int32_t> fed = step.fed.sequence(b);
      const std::int32_t kept = step.kept[b];
      if (kept < 1 || static_cast<std::size_t>(kept) > fed.size()) {
        throw invalid_argument(where() + ": kept must be in [1, " + std::to_string(fed.size()) +
                               "] (the tokens fed), got " + std::to_string(kept));
      }
      for (std::size_t i = 1; i <= static_cast<std::size_t>(kept); ++i) {  // the tokens paired: fed[1, kept), next
        const std::int32_t token = i < static_cast<std::size_t>(kept) ? fed[i] : step.next[b];
        if (token < 0 || token >= vocab_size()) {
          const std::string place = i < static_cast<std::size_t>(kept) ? " at position " + std::to_string(i) + " of fed"
                                                                       : std::string(" (next)");
          throw token_out_of_range(where() + ": token id " + std::to_string(token) + place + " is outside [0, " +
                                       std::to_string(vocab_size()) + ")",
                                   b, static_cast<std::int64_t>(i), token);
        }
      }
      if (cache_.length(state.slot) + kept > cache_.max_positions()) {
        throw invalid_argument(where() + ": the MTP cache holds " + std::to_string(cache_.length(state.slot)) +
                               " positions and cannot take " + std::to_string(kept) + " more (max_positions " +
                               std::to_string(cache_.max_positions()) + ")");
      }
    }
  }

  void check_requests(view<const draft_request> requests) const {
    for (std::size_t r = 0; r < requests.size(); ++r) {
      const draft_request& request = requests[r];
      const auto where = [&] { return "mtp_drafter::propose: sequence " + std::to_string(request.sequence); };
      const sequence_state& state = state_of(request.sequence, "propose");
      for (std::size_t other = 0; other < r; ++other) {
        if (requests[other].sequence == request.sequence) {
          throw invalid_argument(where() + " is requested more than once");
        }
      }
      if (request.max_tokens < 1) {
        throw invalid_argument(where() + ": max_tokens must be >= 1, got " + std::to_string(request.max_tokens));
      }
      if (!state.observed) {
        throw invalid_argument(where() + " has not been observed yet (observe its prefill first)");
      }
      // Draft i > 1 runs the module at position length + i - 2.
      const std::int64_t needed = cache_.length(state.slot) + request.max_tokens - 1;
      if (needed > cache_.max_positions()) {
        throw invalid_argument(where() + ": " + std::to_string(request.max_tokens) + " drafts after " +
                               std::to_string(cache_.length(state.slot)) + " positions need " + std::to_string(needed) +
                               " MTP cache positions, max_positions is " + std::to_string(cache_.max_positions()));
      }
    }
  }

  policy_type policy_;
  Target* target_;
  cache_type cache_;
  std::size_t width_;                                       ///< H
  typename policy_type::template buffer<float> last_rows_;  ///< [max_sequences x H], row = cache slot
  std::unordered_map<std::int32_t, sequence_state> sequences_;

  // Scratch, reused across calls.
  typename policy_type::template buffer<float> hidden_;
  typename policy_type::template buffer<float> embedded_;
  typename policy_type::template buffer<float> out_;
  typename policy_type::template buffer<float> logits_;
  typename policy_type::template buffer<std::int64_t> staged_indices_;
  std::vector<slot_id> slots_;
  std::vector<std::int64_t> sizes_;
  std::vector<std::int32_t> tokens_;
  std::vector<std::int64_t> indices_;
  std::vector<std::int64_t> committed_;
  std::vector<std::size_t> active_;
  std::vector<std::int32_t> drafts_;  ///< [requests x longest]
  std::vector<float> q_;              ///< [requests x longest x V] when sampling
  std::vector<float> logits_host_;
};

}  // namespace ngemb
