#pragma once
// The n-gram cache property, written once for every policy: random sequences split into a prefill and decode
// steps, with random drafts of which random prefixes are accepted; the ids computed step by step through the
// cache must equal the ids of hashing the final accepted sequences in one shot.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "ngemb/cache/ngram_cache.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "token_batch.hpp"

namespace ngemb_test {

/// Moves host vectors into the policy's memory and back; the identity for the host policy.
template <class Policy>
struct staging {
  const Policy& policy;

  template <class T>
  typename Policy::template buffer<T> to_policy(const std::vector<T>& values) const {
    typename Policy::template buffer<T> buffer(policy, values.size());
    copy_to(policy, ngemb::view<const T>(values), buffer.as_view());
    return buffer;
  }
  template <class T>
  std::vector<T> to_host(const typename Policy::template buffer<T>& buffer) const {
    std::vector<T> values(buffer.size());
    copy_to_host(policy, buffer.as_view(), ngemb::view<T>(values));
    return values;
  }
};

/// A ragged batch built from host sequences and copied into the policy's memory.
template <class Policy>
struct staged_batch {
  typename Policy::template buffer<std::int32_t> tokens;
  typename Policy::template buffer<std::int64_t> offsets;

  staged_batch(const Policy& policy, const std::vector<std::vector<std::int32_t>>& sequences) {
    token_batch flat;
    for (const auto& sequence : sequences) {
      flat.add(sequence);
    }
    const staging<Policy> stage{policy};
    tokens = stage.to_policy(flat.tokens);
    offsets = stage.to_policy(flat.offsets);
  }
  [[nodiscard]] ngemb::ragged_view<const std::int32_t> as_view() const { return {tokens.as_view(), offsets.as_view()}; }
};

/// Hashes one ragged batch through the cache and returns the ids on the host.
template <class Policy>
std::vector<std::int64_t> hash_step(const Policy& policy, const ngemb::longcat_hash& hasher,
                                    ngemb::ngram_cache<std::int32_t, Policy>& cache, const std::vector<std::int32_t>& slots,
                                    const std::vector<std::vector<std::int32_t>>& sequences) {
  const staged_batch<Policy> batch(policy, sequences);
  typename Policy::template buffer<std::int64_t> ids(
      policy, batch.tokens.size() * static_cast<std::size_t>(hasher.num_tables()));
  ngemb::hash_tokens(policy, hasher, cache, ngemb::view<const std::int32_t>(slots), batch.as_view(), ids.as_view());
  return staging<Policy>{policy}.to_host(ids);
}

template <class Policy>
void record_step(ngemb::ngram_cache<std::int32_t, Policy>& cache, const Policy& policy, const std::vector<std::int32_t>& slots,
                 const std::vector<std::vector<std::int32_t>>& sequences, bool as_draft) {
  const staged_batch<Policy> batch(policy, sequences);
  if (as_draft) {
    cache.append(ngemb::view<const std::int32_t>(slots), batch.as_view());
  } else {
    cache.advance(ngemb::view<const std::int32_t>(slots), batch.as_view());
  }
  synchronize(policy);  // the staged tokens die at the end of this scope
}

/// A vocabulary of 17 where EOS collides often, orders up to 6 and an ignored token: boundaries everywhere.
inline ngemb::ngram_config small_vocabulary_config() {
  auto small = ngemb::ngram_config::longcat_flash_lite();
  small.vocab_size = 17;
  small.max_order = 6;
  small.splits = 2;
  small.hidden_size = 64;
  small.ratio = 3.0;
  small.eos_token = 1;
  small.ignored_tokens = {4};
  return small;
}

template <class Policy>
void check_cache_matches_one_shot(const Policy& policy, ngemb::ngram_config config, unsigned seed) {
  std::mt19937 random(seed);
  const ngemb::longcat_hash hasher(config);
  const int tables = hasher.num_tables();
  constexpr int max_draft = 5;
  constexpr std::size_t batch_size = 6;
  ngemb::ngram_cache<std::int32_t, Policy> cache(policy, config, batch_size + 2, max_draft);
  std::vector<std::int32_t> slots;
  for (std::size_t b = 0; b < batch_size; ++b) {
    slots.push_back(cache.allocate());
  }
  std::uniform_int_distribution<std::int32_t> token(0, static_cast<std::int32_t>(config.vocab_size - 1));
  const auto draw = [&] {  // EOS-dense so segment cuts cross step boundaries often
    return random() % 4 == 0 ? static_cast<std::int32_t>(config.eos_token.value_or(1)) : token(random);
  };
  std::vector<std::vector<std::int32_t>> accepted(batch_size);       // final sequences
  std::vector<std::vector<std::int64_t>> stepwise_ids(batch_size);   // ids of their tokens, step by step

  // Prefill of random lengths (empty allowed).
  std::vector<std::vector<std::int32_t>> prompt(batch_size);
  for (auto& sequence : prompt) {
    sequence.resize(random() % 12);
    std::generate(sequence.begin(), sequence.end(), draw);
  }
  auto ids = hash_step(policy, hasher, cache, slots, prompt);
  record_step(cache, policy, slots, prompt, false);
  std::size_t row = 0;
  for (std::size_t b = 0; b < batch_size; ++b) {
    for (std::size_t i = 0; i < prompt[b].size(); ++i, ++row) {
      stepwise_ids[b].insert(stepwise_ids[b].end(), ids.begin() + static_cast<std::ptrdiff_t>(row * tables),
                             ids.begin() + static_cast<std::ptrdiff_t>((row + 1) * tables));
    }
    accepted[b] = prompt[b];
  }

  for (int step = 0; step < 12; ++step) {
    // Draft in one or two appends, then accept a random prefix, then the verifier's own token.
    std::vector<std::vector<std::int32_t>> drafts(batch_size);
    std::vector<std::vector<std::int64_t>> draft_ids(batch_size);
    const int appends = 1 + static_cast<int>(random() % 2);
    for (int part = 0; part < appends; ++part) {
      std::vector<std::vector<std::int32_t>> chunk(batch_size);
      for (std::size_t b = 0; b < batch_size; ++b) {
        chunk[b].resize(random() % static_cast<unsigned>(max_draft / appends + 1));
        std::generate(chunk[b].begin(), chunk[b].end(), draw);
      }
      ids = hash_step(policy, hasher, cache, slots, chunk);
      record_step(cache, policy, slots, chunk, true);
      row = 0;
      for (std::size_t b = 0; b < batch_size; ++b) {
        drafts[b].insert(drafts[b].end(), chunk[b].begin(), chunk[b].end());
        draft_ids[b].insert(draft_ids[b].end(), ids.begin() + static_cast<std::ptrdiff_t>(row * tables),
                            ids.begin() + static_cast<std::ptrdiff_t>((row + chunk[b].size()) * tables));
        row += chunk[b].size();
      }
    }
    std::vector<std::int32_t> accepted_counts(batch_size);
    for (std::size_t b = 0; b < batch_size; ++b) {
      CHECK(cache.pending(slots[b]) == static_cast<std::int32_t>(drafts[b].size()));
      accepted_counts[b] = static_cast<std::int32_t>(random() % (drafts[b].size() + 1));
      accepted[b].insert(accepted[b].end(), drafts[b].begin(), drafts[b].begin() + accepted_counts[b]);
      stepwise_ids[b].insert(stepwise_ids[b].end(), draft_ids[b].begin(),
                             draft_ids[b].begin() + static_cast<std::ptrdiff_t>(accepted_counts[b]) * tables);
    }
    cache.commit(ngemb::view<const std::int32_t>(slots), ngemb::view<const std::int32_t>(accepted_counts));
    std::vector<std::vector<std::int32_t>> bonus(batch_size);
    for (auto& sequence : bonus) {
      sequence.resize(step % 3 == 0 ? random() % 3 : 1);
      std::generate(sequence.begin(), sequence.end(), draw);
    }
    ids = hash_step(policy, hasher, cache, slots, bonus);
    record_step(cache, policy, slots, bonus, false);
    row = 0;
    for (std::size_t b = 0; b < batch_size; ++b) {
      accepted[b].insert(accepted[b].end(), bonus[b].begin(), bonus[b].end());
      stepwise_ids[b].insert(stepwise_ids[b].end(), ids.begin() + static_cast<std::ptrdiff_t>(row * tables),
                             ids.begin() + static_cast<std::ptrdiff_t>((row + bonus[b].size()) * tables));
      row += bonus[b].size();
      CHECK(cache.pending(slots[b]) == 0);
      CHECK(cache.committed(slots[b]) ==
            std::min<std::int32_t>(static_cast<std::int32_t>(accepted[b].size()), config.max_order - 1));
    }
  }

  // One shot over the final sequences, on the host.
  const ngemb::host_policy host{};
  const staged_batch<ngemb::host_policy> final_batch(host, accepted);
  std::vector<std::int64_t> one_shot(final_batch.tokens.size() * static_cast<std::size_t>(tables));
  ngemb::hash_tokens(host, hasher, final_batch.as_view(), ngemb::view<std::int64_t>(one_shot));
  std::vector<std::int64_t> stepwise;
  for (const auto& sequence_ids : stepwise_ids) {
    stepwise.insert(stepwise.end(), sequence_ids.begin(), sequence_ids.end());
  }
  REQUIRE(stepwise.size() == one_shot.size());
  CHECK(stepwise == one_shot);
  for (std::size_t b = 0; b < batch_size; ++b) {  // the window is the tail of the accepted sequence
    const auto window = cache.window(slots[b]);
    const std::size_t keep = std::min<std::size_t>(accepted[b].size(), static_cast<std::size_t>(config.max_order - 1));
    CHECK(window == std::vector<std::int32_t>(accepted[b].end() - static_cast<std::ptrdiff_t>(keep), accepted[b].end()));
  }
}

}  // namespace ngemb_test
