#pragma once
// Per-slot state transitions of the n-gram cache, shared by the host mirror (bookkeeping and validation) and the
// element operations that move the tokens (host loop or device kernel).
#include <cstddef>
#include <cstdint>

#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"

namespace ngemb::detail {

/// A slot's window is storage[0, committed + pending): the last committed tokens (at most N-1 of them), then
/// the unverified draft tokens.
struct slot_state {
  std::int32_t committed = 0;
  std::int32_t pending = 0;

  NGEMB_HD std::int32_t size() const { return committed + pending; }
};

NGEMB_HD inline slot_state after_append(slot_state state, std::int64_t count) {
  state.pending += static_cast<std::int32_t>(count);
  return state;
}

/// Keeps the first `accepted` pending tokens as committed, drops the rest, then keeps the last `lookback`.
NGEMB_HD inline slot_state after_commit(slot_state state, std::int32_t accepted, std::int32_t lookback) {
  const std::int32_t kept = state.committed + accepted;
  return {kept < lookback ? kept : lookback, 0};
}

/// Keeps the first `kept` pending tokens, still pending (draft tokens proposed ahead and then not fed).
NGEMB_HD inline slot_state after_truncate_pending(slot_state state, std::int32_t kept) {
  state.pending = kept < state.pending ? kept : state.pending;
  return state;
}

NGEMB_HD inline slot_state after_advance(slot_state state, std::int64_t count, std::int32_t lookback) {
  const std::int64_t total = state.committed + count;
  return {static_cast<std::int32_t>(total < lookback ? total : lookback), 0};
}

/// Shared by the token-moving operations: where slot `slot` lives.
template <class Token>
struct slot_storage {
  Token* tokens;
  slot_state* states;
  std::int64_t capacity;  // lookback + max_draft
  std::int32_t lookback;

  NGEMB_HD Token* window(std::size_t slot) const { return tokens + static_cast<std::int64_t>(slot) * capacity; }
};

template <class Token>
struct append_op {
  slot_storage<Token> storage;
  const std::int32_t* slots;
  ragged_view<const Token> tokens;

  NGEMB_HD void operator()(std::size_t sequence) const {
    const auto slot = static_cast<std::size_t>(slots[sequence]);
    slot_state& state = storage.states[slot];
    Token* window = storage.window(slot);
    const view<const Token> added = tokens.sequence(sequence);
    for (std::size_t i = 0; i < added.size(); ++i) {
      window[static_cast<std::size_t>(state.size()) + i] = added[i];
    }
    state = after_append(state, static_cast<std::int64_t>(added.size()));
  }
};

template <class Token>
struct commit_op {
  slot_storage<Token> storage;
  const std::int32_t* slots;
  const std::int32_t* accepted;

  NGEMB_HD void operator()(std::size_t sequence) const {
    const auto slot = static_cast<std::size_t>(slots[sequence]);
    slot_state& state = storage.states[slot];
    Token* window = storage.window(slot);
    const slot_state next = after_commit(state, accepted[sequence], storage.lookback);
    const std::int32_t dropped = state.committed + accepted[sequence] - next.committed;
    for (std::int32_t i = 0; i < next.committed; ++i) {  // shift left: the source is never behind the target
      window[i] = window[i + dropped];
    }
    state = next;
  }
};

template <class Token>
struct truncate_pending_op {
  slot_storage<Token> storage;
  const std::int32_t* slots;
  const std::int32_t* kept;

  NGEMB_HD void operator()(std::size_t sequence) const {
    slot_state& state = storage.states[static_cast<std::size_t>(slots[sequence])];
    state = after_truncate_pending(state, kept[sequence]);  // the window's tokens stay where they are
  }
};

template <class Token>
struct advance_op {
  slot_storage<Token> storage;
  const std::int32_t* slots;
  ragged_view<const Token> tokens;

  NGEMB_HD void operator()(std::size_t sequence) const {
    const auto slot = static_cast<std::size_t>(slots[sequence]);
    slot_state& state = storage.states[slot];
    Token* window = storage.window(slot);
    const view<const Token> added = tokens.sequence(sequence);
    const slot_state next = after_advance(state, static_cast<std::int64_t>(added.size()), storage.lookback);
    // Keep the last next.committed tokens of (old committed ++ added); the source index never trails the target.
    const std::int64_t first = state.committed + static_cast<std::int64_t>(added.size()) - next.committed;
    for (std::int32_t i = 0; i < next.committed; ++i) {
      const std::int64_t source = first + i;
      window[i] = source < state.committed ? window[source]
                                           : added[static_cast<std::size_t>(source - state.committed)];
    }
    state = next;
  }
};

/// The look-back source for hashing through the cache: sequence b reads slot slots[b]'s window.
template <class Token>
struct cache_context {
  const Token* tokens;
  const slot_state* states;
  const std::int32_t* slots;
  std::int64_t capacity;

  NGEMB_HD std::int64_t size(std::size_t sequence) const { return states[slots[sequence]].size(); }
  NGEMB_HD std::uint32_t at(std::size_t sequence, std::int64_t position) const {
    return static_cast<std::uint32_t>(tokens[static_cast<std::int64_t>(slots[sequence]) * capacity + position]);
  }
};

}  // namespace ngemb::detail
