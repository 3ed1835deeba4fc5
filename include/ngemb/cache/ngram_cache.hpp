#pragma once
// The n-gram cache (SPEC §5): per sequence slot, the last N-1 committed tokens plus up to `max_draft` unverified
// draft tokens, so that hashing a step's tokens gives the ids of hashing the whole sequence at once, and a
// speculative step can be rolled back. Memory is O(N + max_draft) per slot, never O(context length).
//
// Typical step for a batch of slots (all token views in the policy's memory, slot lists on the host):
//   hash_tokens(policy, hasher, cache, slots, prompt, ids);  cache.advance(slots, prompt);     // prefill / decode
//   hash_tokens(policy, hasher, cache, slots, drafts, ids);  cache.append(slots, drafts);      // draft tokens
//   cache.commit(slots, accepted);                                                              // verification
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/cache/detail/slot_ops.hpp"
#include "ngemb/core/checked.hpp"
#include "ngemb/core/config.hpp"
#include "ngemb/core/detail/free_slots.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/input_checks.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/policy/host_policy.hpp"

namespace ngemb {

template <std::integral Token = std::int32_t, class Policy = host_policy>
class ngram_cache {
 public:
  using slot_id = std::int32_t;

  /// At most this many slots and draft tokens per slot: far above any serving batch or draft length, low enough
  /// that the cache's size cannot overflow.
  static constexpr std::size_t slot_limit = std::size_t{1} << 24;
  static constexpr int draft_limit = 1 << 12;

  /// Room for `max_slots` concurrent sequences of a model with this config, each with up to `max_draft`
  /// pending draft tokens. Everything is validated before anything is allocated.
  ngram_cache(const Policy& policy, const ngram_config& config, std::size_t max_slots, int max_draft)
      : policy_(policy),
        vocab_size_(validated(config, max_slots, max_draft).vocab_size),
        lookback_(config.lookback()),
        max_draft_(max_draft),
        capacity_(static_cast<std::int64_t>(config.lookback()) + max_draft),
        tokens_(policy, checked_product("ngram_cache: slots x (N-1 + max_draft) tokens", max_slots, capacity_)),
        states_(policy, max_slots),
        staged_slots_(policy, max_slots),
        staged_accepted_(policy, max_slots),
        staged_bounds_(policy, 2),
        mirror_(max_slots),
        allocated_(max_slots, false),
        free_slots_(max_slots) {
    copy_to(policy_, view<const detail::slot_state>(mirror_), states_.as_view());
  }

  /// Takes the lowest free slot, empty. Throws invalid_argument when all are in use.
  slot_id allocate() {
    if (free_slots_.empty()) {
      throw invalid_argument("ngram_cache: all " + std::to_string(max_slots()) + " slots are in use");
    }
    const slot_id slot = free_slots_.take_lowest();
    allocated_[static_cast<std::size_t>(slot)] = true;
    reset(slot);
    return slot;
  }

  /// Returns a slot to the free list.
  void free(slot_id slot) {
    require_allocated(slot, "free");
    allocated_[static_cast<std::size_t>(slot)] = false;
    free_slots_.give_back(slot);
  }

  /// Forgets every token of a slot (a new sequence starts in it).
  void reset(slot_id slot) {
    require_allocated(slot, "reset");
    mirror_[static_cast<std::size_t>(slot)] = {};
    copy_to(policy_, view<const detail::slot_state>(&mirror_[static_cast<std::size_t>(slot)], 1),
            states_.as_view().subview(static_cast<std::size_t>(slot), 1));
  }

  /// Adds unverified draft tokens to each slot: sequence b of `tokens` goes to slots[b].
  void append(view<const slot_id> slots, ragged_view<const Token> tokens) {
    const std::vector<std::int64_t> offsets = checked_tokens(slots, tokens, "append");
    for (std::size_t b = 0; b < slots.size(); ++b) {
      const detail::slot_state state = mirror_[static_cast<std::size_t>(slots[b])];
      const std::int64_t count = offsets[b + 1] - offsets[b];
      if (state.pending + count > max_draft_) {
        throw invalid_argument("ngram_cache::append: slot " + std::to_string(slots[b]) + " would hold " +
                               std::to_string(state.pending + count) + " pending tokens, more than max_draft = " +
                               std::to_string(max_draft_));
      }
    }
    for (std::size_t b = 0; b < slots.size(); ++b) {
      auto& state = mirror_[static_cast<std::size_t>(slots[b])];
      state = detail::after_append(state, offsets[b + 1] - offsets[b]);
    }
    for_each_n(policy_, slots.size(), detail::append_op<Token>{storage(), stage(slots), tokens});
  }

  /// Verification result: slot slots[b] keeps its first accepted[b] pending tokens and drops the others.
  void commit(view<const slot_id> slots, view<const std::int32_t> accepted) {
    check_pending_counts(slots, accepted, "commit", "accepted", "accept");
    for (std::size_t b = 0; b < slots.size(); ++b) {
      auto& state = mirror_[static_cast<std::size_t>(slots[b])];
      state = detail::after_commit(state, accepted[b], lookback_);
    }
    copy_to(policy_, accepted, staged_accepted_.as_view().subview(0, accepted.size()));
    for_each_n(policy_, slots.size(), detail::commit_op<Token>{storage(), stage(slots), staged_accepted_.data()});
  }

  /// Drops pending tokens without committing any: slot slots[b] keeps its first kept[b] pending tokens, still
  /// pending (drafts embedded ahead of verification that verification did not feed).
  void truncate_pending(view<const slot_id> slots, view<const std::int32_t> kept) {
    check_pending_counts(slots, kept, "truncate_pending", "kept", "keep");
    for (std::size_t b = 0; b < slots.size(); ++b) {
      auto& state = mirror_[static_cast<std::size_t>(slots[b])];
      state = detail::after_truncate_pending(state, kept[b]);
    }
    copy_to(policy_, kept, staged_accepted_.as_view().subview(0, kept.size()));
    for_each_n(policy_, slots.size(),
               detail::truncate_pending_op<Token>{storage(), stage(slots), staged_accepted_.data()});
  }

  /// Adds verified tokens directly (prefill, or decoding without speculation); any length, only the last N-1
  /// are kept. The slots must have no pending tokens.
  void advance(view<const slot_id> slots, ragged_view<const Token> tokens) {
    const std::vector<std::int64_t> offsets = checked_tokens(slots, tokens, "advance");
    for (std::size_t b = 0; b < slots.size(); ++b) {
      if (mirror_[static_cast<std::size_t>(slots[b])].pending != 0) {
        throw invalid_argument("ngram_cache::advance: slot " + std::to_string(slots[b]) + " has " +
                               std::to_string(mirror_[static_cast<std::size_t>(slots[b])].pending) +
                               " pending draft tokens; commit them first");
      }
    }
    for (std::size_t b = 0; b < slots.size(); ++b) {
      auto& state = mirror_[static_cast<std::size_t>(slots[b])];
      state = detail::after_advance(state, offsets[b + 1] - offsets[b], lookback_);
    }
    for_each_n(policy_, slots.size(), detail::advance_op<Token>{storage(), stage(slots), tokens});
  }

  /// One slot at a time (a request joining or leaving mid-batch); `tokens` in the policy's memory.
  void append(slot_id slot, view<const Token> tokens) { append(view<const slot_id>(&slot, 1), one_sequence(tokens)); }
  void commit(slot_id slot, std::int32_t accepted) {
    commit(view<const slot_id>(&slot, 1), view<const std::int32_t>(&accepted, 1));
  }
  void advance(slot_id slot, view<const Token> tokens) { advance(view<const slot_id>(&slot, 1), one_sequence(tokens)); }
  void truncate_pending(slot_id slot, std::int32_t kept) {
    truncate_pending(view<const slot_id>(&slot, 1), view<const std::int32_t>(&kept, 1));
  }

  /// The look-back source for hashing sequence b from slots[b] (used by hash_tokens over the cache).
  detail::cache_context<Token> lookback_source(view<const slot_id> slots) {
    check_slots(slots, "hash_tokens");
    return {tokens_.data(), states_.data(), stage(slots), capacity_};
  }

  [[nodiscard]] std::int32_t committed(slot_id slot) const { return state_of(slot).committed; }
  [[nodiscard]] std::int32_t pending(slot_id slot) const { return state_of(slot).pending; }
  [[nodiscard]] int lookback() const { return lookback_; }
  [[nodiscard]] int max_draft() const { return max_draft_; }
  [[nodiscard]] std::int64_t vocab_size() const { return vocab_size_; }
  [[nodiscard]] std::size_t max_slots() const { return mirror_.size(); }
  [[nodiscard]] std::size_t free_slot_count() const { return free_slots_.size(); }
  /// The tokens a slot holds (committed then pending), copied to the host; for inspection and tests.
  [[nodiscard]] std::vector<Token> window(slot_id slot) const {
    std::vector<Token> values(static_cast<std::size_t>(state_of(slot).size()));
    copy_to_host(policy_, view<const Token>(tokens_.data() + slot * capacity_, values.size()), view<Token>(values));
    return values;
  }

 private:
  static const ngram_config& validated(const ngram_config& config, std::size_t max_slots, int max_draft) {
    config.validate();
    if (max_draft < 0 || max_draft > draft_limit) {
      throw invalid_argument("ngram_cache: max_draft must be in [0, " + std::to_string(draft_limit) + "], got " +
                             std::to_string(max_draft));
    }
    if (max_slots > slot_limit) {
      throw invalid_argument("ngram_cache: max_slots must be at most 2^24, got " + std::to_string(max_slots));
    }
    return config;
  }

  detail::slot_storage<Token> storage() { return {tokens_.data(), states_.data(), capacity_, lookback_}; }

  const detail::slot_state& state_of(slot_id slot) const {
    require_allocated(slot, "state");
    return mirror_[static_cast<std::size_t>(slot)];
  }

  void require_allocated(slot_id slot, const char* operation) const {
    if (slot < 0 || static_cast<std::size_t>(slot) >= allocated_.size() || !allocated_[static_cast<std::size_t>(slot)]) {
      throw invalid_argument(std::string("ngram_cache::") + operation + ": slot " + std::to_string(slot) +
                             " is not an allocated slot (the cache has " + std::to_string(max_slots()) + " slots)");
    }
  }

  /// Every slot allocated and listed once: the element operations of one batch must not share a slot.
  void check_slots(view<const slot_id> slots, const char* operation) const {
    std::vector<bool> seen(max_slots(), false);
    for (const slot_id slot : slots) {
      require_allocated(slot, operation);
      if (seen[static_cast<std::size_t>(slot)]) {
        throw invalid_argument(std::string("ngram_cache::") + operation + ": slot " + std::to_string(slot) +
                               " is listed twice in one batch");
      }
      seen[static_cast<std::size_t>(slot)] = true;
    }
  }

  /// One count per listed slot, each within the slot's pending tokens (commit: accepted; truncate_pending: kept).
  void check_pending_counts(view<const slot_id> slots, view<const std::int32_t> counts, const char* operation,
                            const char* counted, const char* verb) const {
    check_slots(slots, operation);
    if (counts.size() != slots.size()) {
      throw shape_mismatch(std::string("ngram_cache::") + operation + ": " + std::to_string(slots.size()) +
                           " slots but " + std::to_string(counts.size()) + " " + counted + " counts");
    }
    for (std::size_t b = 0; b < slots.size(); ++b) {
      const detail::slot_state state = mirror_[static_cast<std::size_t>(slots[b])];
      if (counts[b] < 0 || counts[b] > state.pending) {
        throw invalid_argument(std::string("ngram_cache::") + operation + ": slot " + std::to_string(slots[b]) +
                               " has " + std::to_string(state.pending) + " pending tokens, cannot " + verb + " " +
                               std::to_string(counts[b]));
      }
    }
  }

  /// Validates slots and tokens; returns the token offsets on the host (the bookkeeping needs the counts).
  std::vector<std::int64_t> checked_tokens(view<const slot_id> slots, ragged_view<const Token> tokens,
                                           const char* operation) {
    check_slots(slots, operation);
    if (tokens.num_sequences() != slots.size()) {
      throw shape_mismatch(std::string("ngram_cache::") + operation + ": " + std::to_string(slots.size()) +
                           " slots but " + std::to_string(tokens.num_sequences()) + " token sequences");
    }
    const std::string name = std::string("ngram_cache::") + operation + ": tokens";
    input_checks<Policy> checks(policy_);
    checks.ragged(tokens, name);
    checks.in_vocabulary(tokens, vocab_size_, name);
    checks.raise_if_failed();
    std::vector<std::int64_t> offsets(tokens.offsets().size());
    copy_to_host(policy_, tokens.offsets(), view<std::int64_t>(offsets));
    return offsets;
  }

  /// `tokens` as a batch of one sequence; its offsets {0, n} are staged in policy memory.
  ragged_view<const Token> one_sequence(view<const Token> tokens) {
    const std::int64_t bounds[2] = {0, static_cast<std::int64_t>(tokens.size())};
    copy_to(policy_, view<const std::int64_t>(bounds, 2), staged_bounds_.as_view());
    return {tokens, staged_bounds_.as_view()};
  }

  const slot_id* stage(view<const slot_id> slots) {
    copy_to(policy_, slots, staged_slots_.as_view().subview(0, slots.size()));
    return staged_slots_.data();
  }

  Policy policy_;
  std::int64_t vocab_size_;
  int lookback_;
  int max_draft_;
  std::int64_t capacity_;
  typename Policy::template buffer<Token> tokens_;
  typename Policy::template buffer<detail::slot_state> states_;
  typename Policy::template buffer<slot_id> staged_slots_;
  typename Policy::template buffer<std::int32_t> staged_accepted_;
  typename Policy::template buffer<std::int64_t> staged_bounds_;
  std::vector<detail::slot_state> mirror_;
  std::vector<bool> allocated_;
  detail::free_slots free_slots_;
};

namespace detail {

/// The checked hash over the cache; `deferred` (null: raise now) receives the token checks.
template <class Policy, class Hasher, class Token, class Id>
void hash_cached(const Policy& policy, const Hasher& hasher, ngram_cache<Token, Policy>& cache,
                 view<const std::int32_t> slots, ragged_view<const Token> tokens, view<Id> ids, id_layout layout,
                 input_checks<Policy>* deferred) {
  check_id_output<Hasher, Id>(hasher, tokens.num_values(), ids.size(), layout);
  if (cache.lookback() != hasher.lookback()) {
    throw invalid_argument("hash_tokens: the cache keeps " + std::to_string(cache.lookback()) +
                           " look-back tokens but the hasher needs " + std::to_string(hasher.lookback()));
  }
  if (tokens.num_sequences() != slots.size()) {
    throw shape_mismatch("hash_tokens: " + std::to_string(slots.size()) + " slots but " +
                         std::to_string(tokens.num_sequences()) + " token sequences");
  }
  checks_or_deferred<Policy> checks(policy, deferred);
  checks->ragged(tokens, "hash_tokens: tokens");
  checks->in_vocabulary(tokens, hasher.vocab_size(), "hash_tokens: tokens");
  checks.before_launch();
  launch_hash(policy, hasher, tokens, cache.lookback_source(slots), ids, layout);
}

}  // namespace detail

/// Ids of each slot's next tokens, with the slot's cached tokens as look-back: sequence b of `tokens` continues
/// the sequence in slots[b]. Call append/advance afterwards to record the tokens. The slot list is checked on the
/// host, the tokens before launching (one synchronising read-back on a device).
template <class Policy, hasher Hasher, std::integral Token, ngram_id Id>
void hash_tokens(const Policy& policy, const Hasher& hasher, ngram_cache<Token, Policy>& cache,
                 view<const std::int32_t> slots, ragged_view<const Token> tokens, view<Id> ids,
                 id_layout layout = id_layout::per_table) {
  detail::hash_cached(policy, hasher, cache, slots, tokens, ids, layout, static_cast<input_checks<Policy>*>(nullptr));
}

/// As above without synchronising: the slot list is still checked at once on the host, the token checks are
/// queued in `checks` (see input_checks).
template <class Policy, hasher Hasher, std::integral Token, ngram_id Id>
void hash_tokens_async(const Policy& policy, const Hasher& hasher, ngram_cache<Token, Policy>& cache,
                       view<const std::int32_t> slots, ragged_view<const Token> tokens, view<Id> ids,
                       id_layout layout, input_checks<Policy>& checks) {
  detail::hash_cached(policy, hasher, cache, slots, tokens, ids, layout, &checks);
}

}  // namespace ngemb
