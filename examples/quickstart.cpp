// quickstart: the n-gram ids of LongCat-Flash-Lite, then a speculative-decoding step through the n-gram cache.
// Run it without arguments; it exits 1 if the ids computed step by step differ from the one-shot ids.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "ngemb/ngemb.hpp"

namespace {

using token_list = std::vector<std::int32_t>;

/// Ids of one sequence hashed from its start: K*(N-1) per token, in sub-table order.
std::vector<std::int64_t> hash_sequence(const ngemb::longcat_hash& hasher, const token_list& tokens) {
  const std::vector<std::int64_t> offsets{0, static_cast<std::int64_t>(tokens.size())};
  std::vector<std::int64_t> ids(tokens.size() * static_cast<std::size_t>(hasher.num_tables()));
  ngemb::hash_tokens(ngemb::host_policy{}, hasher, ngemb::ragged_view<const std::int32_t>(tokens, offsets),
                     ngemb::view<std::int64_t>(ids));
  return ids;
}

/// The look-back of tokens[position] as the hash sees it, oldest first: "-" before the start or at and
/// before an EOS (those positions contribute 0).
std::string lookback_window(const ngemb::ngram_config& config, const token_list& tokens, std::size_t position) {
  std::vector<std::string> seen(static_cast<std::size_t>(config.lookback()), "-");
  for (std::size_t back = 1; back <= seen.size() && back <= position; ++back) {
    const std::int32_t token = tokens[position - back];
    if (token == config.eos_token) {
      break;
    }
    seen[seen.size() - back] = std::to_string(token);
  }
  std::string text = "[";
  for (const auto& entry : seen) {
    if (text.size() > 1) {
      text += ' ';
    }
    text.append(5 - std::min<std::size_t>(5, entry.size()), ' ');  // right-aligned like the token column
    text += entry;
  }
  return text + "]";
}

std::string join(const token_list& tokens, std::size_t begin, std::size_t end) {
  std::string text;
  for (std::size_t i = begin; i < end; ++i) {
    if (i != begin) {
      text += ' ';
    }
    text += std::to_string(tokens[i]);
  }
  return text;
}

/// A cache slot's window: committed tokens, then "|" and the unverified drafts when there are any.
std::string describe_window(const ngemb::ngram_cache<>& cache, std::int32_t slot) {
  const token_list window = cache.window(slot);
  const auto committed = static_cast<std::size_t>(cache.committed(slot));
  std::string text = "[" + join(window, 0, committed);
  if (committed < window.size()) {
    text += " | " + join(window, committed, window.size());
  }
  return text + "]";
}

void show_ids(const ngemb::longcat_hash& hasher, const token_list& tokens) {
  const ngemb::ngram_config& config = hasher.config();
  const auto ids = hash_sequence(hasher, tokens);
  const auto tables = static_cast<std::size_t>(hasher.num_tables());
  std::printf("  token  look-back (oldest first)  ids (one per sub-table)\n");
  for (std::size_t position = 0; position < tokens.size(); ++position) {
    for (int order = 2; order <= config.max_order; ++order) {
      if (order == 2) {
        std::printf("  %5d  %-24s  ", tokens[position], lookback_window(config, tokens, position).c_str());
      } else {
        std::printf("  %5s  %-24s  ", "", "");
      }
      std::printf("order %d:", order);
      for (int split = 0; split < config.splits; ++split) {
        std::printf(" %8lld", static_cast<long long>(ids[position * tables +
                                                         static_cast<std::size_t>((order - 2) * config.splits + split)]));
      }
      std::printf("\n");
    }
  }
}

/// Prefill, one speculative step, and the check that step-by-step ids equal one-shot ids. Returns that check.
bool simulate_speculative_decoding(const ngemb::longcat_hash& hasher, const token_list& prompt) {
  const ngemb::host_policy policy{};
  const auto tables = static_cast<std::size_t>(hasher.num_tables());
  constexpr int max_draft = 4;
  ngemb::ngram_cache<> cache(policy, hasher.config(), /*max_slots=*/1, max_draft);
  const std::vector<std::int32_t> slots{cache.allocate()};

  token_list accepted;                // the sequence as the verifier accepts it
  std::vector<std::int64_t> step_ids;  // ids of the accepted tokens, as the steps computed them
  // Hashes `tokens` as the continuation of the slot's sequence, and records them as verified or as drafts.
  const auto step = [&](const token_list& tokens, bool draft) {
    const std::vector<std::int64_t> offsets{0, static_cast<std::int64_t>(tokens.size())};
    const ngemb::ragged_view<const std::int32_t> batch(tokens, offsets);
    std::vector<std::int64_t> ids(tokens.size() * tables);
    ngemb::hash_tokens(policy, hasher, cache, ngemb::view<const std::int32_t>(slots), batch,
                       ngemb::view<std::int64_t>(ids));
    if (draft) {
      cache.append(ngemb::view<const std::int32_t>(slots), batch);
    } else {
      cache.advance(ngemb::view<const std::int32_t>(slots), batch);
    }
    return ids;
  };

  auto ids = step(prompt, false);
  accepted = prompt;
  step_ids = ids;
  std::printf("  prefill   %-30s -> hash, advance:  window %s\n", ("[" + join(prompt, 0, prompt.size()) + "]").c_str(),
              describe_window(cache, slots[0]).c_str());

  const token_list drafts{6005, 7006, 8007, 9008};
  ids = step(drafts, true);
  std::printf("  draft     %-30s -> hash, append:   window %s\n", ("[" + join(drafts, 0, drafts.size()) + "]").c_str(),
              describe_window(cache, slots[0]).c_str());

  const std::vector<std::int32_t> accepted_count{2};
  cache.commit(ngemb::view<const std::int32_t>(slots), ngemb::view<const std::int32_t>(accepted_count));
  accepted.insert(accepted.end(), drafts.begin(), drafts.begin() + accepted_count[0]);
  step_ids.insert(step_ids.end(), ids.begin(), ids.begin() + accepted_count[0] * static_cast<std::ptrdiff_t>(tables));
  std::printf("  verify    %-30s -> commit:         window %s\n", "accept 2 of 4 drafts",
              describe_window(cache, slots[0]).c_str());

  const token_list verifier_token{10009};  // the verifier's own token where the first rejected draft was
  ids = step(verifier_token, false);
  accepted.insert(accepted.end(), verifier_token.begin(), verifier_token.end());
  step_ids.insert(step_ids.end(), ids.begin(), ids.end());
  std::printf("  verifier  %-30s -> hash, advance:  window %s\n", "[10009]", describe_window(cache, slots[0]).c_str());

  const auto one_shot = hash_sequence(hasher, accepted);
  const bool same = one_shot == step_ids;
  std::printf("\nFinal sequence: %s\n", join(accepted, 0, accepted.size()).c_str());
  std::printf("Ids computed step by step vs. hashing the final sequence in one shot (%zu tokens x %zu ids): %s\n",
              accepted.size(), tables, same ? "match" : "MISMATCH");
  return same;
}

}  // namespace

int main() {
  try {
    const ngemb::ngram_config config = ngemb::ngram_config::longcat_flash_lite();
    const ngemb::longcat_hash hasher(config);
    std::printf(
        "ngemb quickstart: LongCat-Flash-Lite n-gram ids\n\n"
        "Besides its usual embedding row, every token looks up rows in %d hashed sub-tables: the token together\n"
        "with the 1, 2 or 3 tokens before it (n-gram orders 2..%d) is hashed by %d different hash functions per\n"
        "order. Config: vocabulary V = %lld, sub-table 0 has %lld rows, token %lld is EOS (it ends a segment: the\n"
        "tokens after it do not look back past it). Each id is a row of one sub-table; a token that sees no earlier\n"
        "token gets its own token id as every id.\n\n",
        hasher.num_tables(), config.max_order, config.splits, static_cast<long long>(config.vocab_size),
        static_cast<long long>(hasher.rows(0)), static_cast<long long>(config.eos_token.value_or(-1)));

    const token_list text{1000, 2001, 3002, 2, 4003, 5004};
    std::printf("(a) Hashing the sequence %s (2 = EOS) with ngemb::hash_tokens; '-' = no token (0):\n",
                join(text, 0, text.size()).c_str());
    show_ids(hasher, text);

    std::printf(
        "\n(b) Speculative decoding through ngemb::ngram_cache. Per sequence the cache keeps the last %d verified\n"
        "    tokens (the look-back the next step needs) and, after '|', the unverified drafts:\n",
        config.lookback());
    return simulate_speculative_decoding(hasher, text) ? 0 : 1;
  } catch (const std::exception& failure) {
    std::fprintf(stderr, "quickstart: %s\n", failure.what());
    return 1;
  }
}
