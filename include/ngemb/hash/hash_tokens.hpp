#pragma once
// Hashing a ragged batch of tokens into n-gram ids under any execution policy. The per-token element operation
// gathers the look-back (from the sequence itself, then from a context source: nothing, a ragged context, or the
// n-gram cache), cut at segment boundaries, and hands it to the hasher's ref.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "ngemb/core/error.hpp"
#include "ngemb/core/input_checks.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/hash/hasher.hpp"

namespace ngemb {

/// Where ids point: into each sub-table (0 <= id < m_i), or into one table holding all sub-tables back to back.
enum class id_layout : std::uint8_t { per_table, concatenated };

/// No earlier tokens: the start of every sequence is the start of its stream.
struct no_context {
  NGEMB_HD std::int64_t size(std::size_t /*sequence*/) const { return 0; }
  NGEMB_HD std::uint32_t at(std::size_t /*sequence*/, std::int64_t /*position*/) const { return 0; }
};

/// Earlier tokens given per sequence as a ragged batch (oldest first); only the last N-1 are read.
template <class Token>
struct ragged_context {
  ragged_view<const Token> tokens;

  /// Offsets out of range (possible only while their check is deferred) read as an empty context.
  NGEMB_HD std::int64_t size(std::size_t sequence) const {
    const std::int64_t begin = tokens.begin_of(sequence);
    const std::int64_t end = tokens.begin_of(sequence + 1);
    const bool inside = 0 <= begin && begin <= end && end <= static_cast<std::int64_t>(tokens.num_values());
    return inside ? end - begin : 0;
  }
  NGEMB_HD std::uint32_t at(std::size_t sequence, std::int64_t position) const {
    return static_cast<std::uint32_t>(tokens.values()[static_cast<std::size_t>(tokens.begin_of(sequence) + position)]);
  }
};

namespace detail {

/// One token: ids of all sub-tables. Tokens are range-checked before this runs.
template <class HashRef, class Token, class Context, class Id>
struct hash_token_op {
  HashRef hash;
  ragged_view<const Token> tokens;
  Context context;
  Id* ids;
  bool concatenated;

  NGEMB_HD void operator()(std::size_t index) const {
    const auto flat = static_cast<std::int64_t>(index);
    const std::size_t sequence = tokens.sequence_of(flat);
    // Offsets whose check is deferred may hold anything (INT64_MIN included): a start outside [0, index] reads as
    // a sequence starting here, so no difference below can overflow and no read leaves the values.
    const std::int64_t offset = tokens.begin_of(sequence);
    const std::int64_t begin = 0 <= offset && offset <= flat ? offset : flat;
    const std::int64_t position = flat - begin;
    std::uint32_t history[HashRef::max_lookback] = {};
    for (int back = 1; back <= hash.lookback(); ++back) {
      const std::int64_t source = position - back;
      std::uint32_t token = 0;
      if (source >= 0) {
        token = static_cast<std::uint32_t>(tokens.values()[static_cast<std::size_t>(begin + source)]);
      } else {
        const std::int64_t in_context = context.size(sequence) + source;
        if (in_context < 0) {
          break;  // before the start of the stream: zero padding
        }
        token = context.at(sequence, in_context);
      }
      if (hash.cuts_lookback(token)) {
        break;  // the boundary token and everything before it contribute 0
      }
      history[back - 1] = token;
    }
    hash.hash(static_cast<std::uint32_t>(tokens.values()[index]), history,
              ids + index * static_cast<std::size_t>(hash.num_tables()), concatenated);
  }
};

template <class Hasher, class Id>
void check_id_output(const Hasher& hasher, std::size_t num_tokens, std::size_t num_ids, id_layout layout) {
  const std::size_t expected = num_tokens * static_cast<std::size_t>(hasher.num_tables());
  if (num_ids != expected) {
    throw shape_mismatch("hash_tokens: ids must hold tokens x K*(N-1) = " + std::to_string(num_tokens) + " x " +
                         std::to_string(hasher.num_tables()) + " = " + std::to_string(expected) + " entries, got " +
                         std::to_string(num_ids));
  }
  const std::int64_t largest = layout == id_layout::concatenated ? hasher.total_rows() : [&] {
    std::int64_t rows = 0;
    for (int table = 0; table < hasher.num_tables(); ++table) {
      rows = rows > hasher.rows(table) ? rows : hasher.rows(table);
    }
    return rows;
  }();
  if (largest - 1 > static_cast<std::int64_t>(std::numeric_limits<Id>::max())) {
    throw invalid_argument("hash_tokens: ids up to " + std::to_string(largest - 1) +
                           " do not fit the id type; use 64-bit ids");
  }
}

/// Runs the element operation once the inputs are known to be valid.
template <class Policy, class Hasher, class Token, class Context, class Id>
void launch_hash(const Policy& policy, const Hasher& hasher, ragged_view<const Token> tokens, Context context,
                 view<Id> ids, id_layout layout) {
  using op = hash_token_op<typename Hasher::ref_type, Token, Context, Id>;
  for_each_n(policy, tokens.num_values(),
             op{hasher.ref(), tokens, context, ids.data(), layout == id_layout::concatenated});
}

}  // namespace detail

/// The id types hash_tokens writes: 32 bits while every id fits, 64 bits for larger tables.
template <class Id>
concept ngram_id = std::is_same_v<Id, std::uint32_t> || std::is_same_v<Id, std::int64_t>;

namespace detail {

/// The checked hash of a fresh batch; `deferred` (null: raise now) receives the offset and token checks.
template <class Policy, class Hasher, class Token, class Id>
void hash_fresh(const Policy& policy, const Hasher& hasher, ragged_view<const Token> tokens, view<Id> ids,
                id_layout layout, input_checks<Policy>* deferred) {
  check_id_output<Hasher, Id>(hasher, tokens.num_values(), ids.size(), layout);
  checks_or_deferred<Policy> checks(policy, deferred);
  checks->ragged(tokens, "hash_tokens: tokens");
  checks->in_vocabulary(tokens, hasher.vocab_size(), "hash_tokens: tokens");
  checks.before_launch();
  launch_hash(policy, hasher, tokens, no_context{}, ids, layout);
}

/// As hash_fresh, with a ragged context as look-back.
template <class Policy, class Hasher, class Token, class Id>
void hash_with_context(const Policy& policy, const Hasher& hasher, ragged_view<const Token> tokens,
                       ragged_view<const Token> context, view<Id> ids, id_layout layout,
                       input_checks<Policy>* deferred) {
  check_id_output<Hasher, Id>(hasher, tokens.num_values(), ids.size(), layout);
  if (context.num_sequences() != tokens.num_sequences()) {
    throw shape_mismatch("hash_tokens: context has " + std::to_string(context.num_sequences()) +
                         " sequences but tokens have " + std::to_string(tokens.num_sequences()));
  }
  checks_or_deferred<Policy> checks(policy, deferred);
  checks->ragged(tokens, "hash_tokens: tokens");
  checks->ragged(context, "hash_tokens: context");
  checks->in_vocabulary(tokens, hasher.vocab_size(), "hash_tokens: tokens");
  checks->in_vocabulary(context, hasher.vocab_size(), "hash_tokens: context");
  checks.before_launch();
  launch_hash(policy, hasher, tokens, ragged_context<Token>{context}, ids, layout);
}

}  // namespace detail

/// Ids of every token of a ragged batch, K*(N-1) per token in sub-table order, written to `ids`
/// ([tokens x K*(N-1)], row-major). Every sequence starts a fresh stream. All views live in the policy's memory.
/// Throws shape_mismatch for bad offsets or a wrong output size and invalid_argument for tokens outside [0, V),
/// before launching (one synchronising read-back on a device).
template <class Policy, hasher Hasher, std::integral Token, ngram_id Id>
void hash_tokens(const Policy& policy, const Hasher& hasher, ragged_view<const Token> tokens, view<Id> ids,
                 id_layout layout = id_layout::per_table) {
  detail::hash_fresh(policy, hasher, tokens, ids, layout, static_cast<input_checks<Policy>*>(nullptr));
}

/// As hash_tokens without synchronising: the offset and token checks are queued in `checks` (see input_checks),
/// the launch stays memory-safe on bad input, and checks.raise_if_failed() reports it later.
template <class Policy, hasher Hasher, std::integral Token, ngram_id Id>
void hash_tokens_async(const Policy& policy, const Hasher& hasher, ragged_view<const Token> tokens, view<Id> ids,
                       id_layout layout, input_checks<Policy>& checks) {
  detail::hash_fresh(policy, hasher, tokens, ids, layout, &checks);
}

/// As above, with `context[s]` the tokens that precede sequence s (a prompt already processed, oldest first):
/// they serve as look-back only and get no ids.
template <class Policy, hasher Hasher, std::integral Token, ngram_id Id>
void hash_tokens(const Policy& policy, const Hasher& hasher, ragged_view<const Token> tokens,
                 ragged_view<const Token> context, view<Id> ids, id_layout layout = id_layout::per_table) {
  detail::hash_with_context(policy, hasher, tokens, context, ids, layout, static_cast<input_checks<Policy>*>(nullptr));
}

/// As above, with the checks queued in `checks` (see the first hash_tokens_async).
template <class Policy, hasher Hasher, std::integral Token, ngram_id Id>
void hash_tokens_async(const Policy& policy, const Hasher& hasher, ragged_view<const Token> tokens,
                       ragged_view<const Token> context, view<Id> ids, id_layout layout,
                       input_checks<Policy>& checks) {
  detail::hash_with_context(policy, hasher, tokens, context, ids, layout, &checks);
}

}  // namespace ngemb
