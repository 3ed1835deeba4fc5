#pragma once
// mtp_drafter (spec/mtp_drafter.hpp) on the shipped tiny-longcat against a from-scratch computation: a fresh MTP
// cache fed every true pair (h_t, x_{t+1}) of the accepted history in one step, then the drafts one by one. A
// simulated speculative run (prefill, then verify steps accepting a chosen number of drafts) checks every proposal
// so, which shows the drafter's cache rolls back to the committed tokens. Run on the host by tests/spec.cpp and on a
// device by tests/cuda/mtp_drafter.cu.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "ngemb/core/views.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/presets/longcat.hpp"
#include "ngemb/spec/mtp_drafter.hpp"
#include "ngemb/text/byte_tokenizer.hpp"

namespace ngemb_test {

template <class Policy>
using mtp_lm = typename ngemb::presets::longcat_flash_lite<Policy>::model;

inline const std::filesystem::path mtp_model_folder = std::filesystem::path(NGEMB_MODELS_DIR) / "tiny-longcat";

template <class Policy>
mtp_lm<Policy> load_mtp_lm(const Policy& policy) {
  return mtp_lm<Policy>::load(policy, mtp_model_folder, {.max_sequences = 4, .max_positions = 256, .max_draft = 8},
                              {.mtp = true});
}

/// tiny-longcat's validation text as token ids (bytes), without BOS.
inline std::vector<std::int32_t> mtp_validation_tokens() {
  std::ifstream file(std::filesystem::path(NGEMB_REFERENCE_DIR) / "tiny_longcat" / "validation.txt", std::ios::binary);
  const std::string text{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  REQUIRE(!text.empty());
  return ngemb::byte_tokenizer::encode(text, false);
}

/// `length` validation tokens from `start`, after BOS.
inline std::vector<std::int32_t> mtp_prompt(std::size_t start, std::size_t length) {
  static const std::vector<std::int32_t> text = mtp_validation_tokens();
  std::vector<std::int32_t> prompt{ngemb::byte_tokenizer::bos};
  prompt.insert(prompt.end(), text.begin() + static_cast<std::ptrdiff_t>(start),
                text.begin() + static_cast<std::ptrdiff_t>(start + length));
  return prompt;
}

template <class Policy, class T>
std::vector<T> mtp_to_host(const Policy& policy, ngemb::view<const T> values) {
  std::vector<T> host(values.size());
  copy_to_host(policy, values, ngemb::view<T>(host));
  return host;
}

/// The lm_head logits [chain x V] of the module fed, on a fresh cache, the pairs (hidden row t, history[t + 1]) for
/// every row of `hidden` [n x H] (history holds n + 1 tokens) in one step, then (its previous row, chain[i]) for
/// each chain token but the last, one step each: the logits that draft chain[0], chain[1], ...
template <class Policy, class Model>
std::vector<float> mtp_scratch_logits(const Policy& policy, Model& model, const std::vector<float>& hidden,
                                      const std::vector<std::int32_t>& history,
                                      const std::vector<std::int32_t>& chain) {
  using buffer = typename Policy::template buffer<float>;
  const auto width = static_cast<std::size_t>(model.config().hidden_size());
  const auto vocab = static_cast<std::size_t>(model.vocab_size());
  const std::size_t n = hidden.size() / width;
  REQUIRE(history.size() == n + 1);
  auto cache = Model::mtp_type::make_cache(policy, model.config(), 1, model.max_positions());
  const auto slot = cache.allocate();
  auto& mtp = model.mtp();
  buffer h(policy, std::max(n, std::size_t{1}) * width);
  buffer embedded(policy, std::max(n, std::size_t{1}) * width);
  buffer out(policy, std::max(n, std::size_t{1}) * width);
  buffer logits(policy, vocab);
  std::vector<float> result;
  const auto take_logits = [&](ngemb::view<const float> row) {
    model.head().forward_normed(policy, 1, row, logits.as_view());
    const std::vector<float> host = mtp_to_host(policy, ngemb::view<const float>(logits.as_view()));
    result.insert(result.end(), host.begin(), host.end());
  };
  copy_to(policy, ngemb::view<const float>(hidden), h.as_view().subview(0, n * width));
  mtp.embed(policy, ngemb::view<const std::int32_t>(history.data() + 1, n), embedded.as_view().subview(0, n * width));
  const std::int64_t size = static_cast<std::int64_t>(n);
  cache.begin(policy, ngemb::view<const decltype(slot)>(&slot, 1), ngemb::view<const std::int64_t>(&size, 1));
  mtp.forward(policy, cache, ngemb::view<const float>(h.as_view().subview(0, n * width)),
              ngemb::view<const float>(embedded.as_view().subview(0, n * width)), out.as_view().subview(0, n * width));
  cache.commit();
  std::vector<float> row = mtp_to_host(policy, ngemb::view<const float>(out.as_view().subview((n - 1) * width, width)));
  for (std::size_t i = 0; i < chain.size(); ++i) {
    copy_to(policy, ngemb::view<const float>(row), h.as_view().subview(0, width));
    take_logits(ngemb::view<const float>(h.as_view().subview(0, width)));
    if (i + 1 == chain.size()) {
      break;
    }
    mtp.embed(policy, ngemb::view<const std::int32_t>(&chain[i], 1), embedded.as_view().subview(0, width));
    const std::int64_t one = 1;
    cache.begin(policy, ngemb::view<const decltype(slot)>(&slot, 1), ngemb::view<const std::int64_t>(&one, 1));
    mtp.forward(policy, cache, ngemb::view<const float>(h.as_view().subview(0, width)),
                ngemb::view<const float>(embedded.as_view().subview(0, width)), out.as_view().subview(0, width));
    cache.commit();
    row = mtp_to_host(policy, ngemb::view<const float>(out.as_view().subview(0, width)));
  }
  return result;
}

/// One sequence of a simulated speculative run: its accepted tokens (and `next`, last) and the target's hidden rows
/// of all but `next`.
struct mtp_run_sequence {
  std::int32_t id = 0;
  std::vector<std::int32_t> history;
  std::vector<float> hidden;
};

/// Checks each chain of `drafts` against mtp_scratch_logits over its sequence's history: greedy drafts equal the
/// scratch argmax; sampled ones equal the draw from the scratch q row, and the drafter's q rows are within 1e-5 of
/// the scratch ones. Returns how many drafts were checked.
template <class Policy, class Model>
std::size_t check_mtp_drafts(const Policy& policy, Model& model, const std::vector<mtp_run_sequence>& sequences,
                             const std::vector<ngemb::draft_request>& requests, const ngemb::sampling_options& sampling,
                             const ngemb::draft_batch& drafts) {
  const auto vocab = static_cast<std::size_t>(model.vocab_size());
  const bool sampled = sampling.temperature != 0.0f;
  REQUIRE(drafts.sequences() == requests.size());
  CHECK(drafts.probabilities.size() == (sampled ? drafts.tokens.size() * vocab : 0));
  std::size_t checked = 0;
  for (std::size_t b = 0; b < requests.size(); ++b) {
    const ngemb::view<const std::int32_t> chain = drafts.drafts_of(b);
    REQUIRE(chain.size() == static_cast<std::size_t>(requests[b].max_tokens));
    const mtp_run_sequence& sequence = sequences[b];
    const std::vector<float> logits = mtp_scratch_logits(policy, model, sequence.hidden, sequence.history,
                                                         std::vector<std::int32_t>(chain.begin(), chain.end()));
    std::vector<float> q(vocab);
    for (std::size_t i = 0; i < chain.size(); ++i) {
      CAPTURE(b);
      CAPTURE(i);
      const ngemb::view<const float> row(logits.data() + i * vocab, vocab);
      if (!sampled) {
        CHECK(chain[i] == ngemb::sample_token(row, sampling, 0.0));
      } else {
        ngemb::token_probabilities(row, sampling, ngemb::view<float>(q));
        const std::size_t token_row = static_cast<std::size_t>(drafts.offsets[b]) + i;
        float worst = 0.0f;
        for (std::size_t v = 0; v < vocab; ++v) {
          worst = std::max(worst, std::abs(q[v] - drafts.probabilities[token_row * vocab + v]));
        }
        CHECK(worst <= 1e-5f);
        const ngemb::token_stream stream{sampling.seed, requests[b].stream,
                                         requests[b].position + static_cast<std::uint32_t>(i)};
        CHECK(chain[i] == ngemb::sample_from_probabilities(ngemb::view<const float>(q),
                                                           stream.uniform(ngemb::speculative_draws::proposal)));
      }
      ++checked;
    }
  }
  return checked;
}

/// A speculative run over `prompts` (one sequence each, prefilled in one batch) of `rounds` verify steps: each
/// round proposes max_tokens[b] drafts per sequence, checks them (check_mtp_drafts), feeds [next, drafts] to the
/// target pending with keep_hidden, keeps 1 + accepted(round, b, drafts) of them, and picks the target's greedy
/// token after the kept ones as `next`. Returns how many drafts were checked.
template <class Policy, class Accepted>
std::size_t run_mtp_drafter_check(const Policy& policy, const std::vector<std::vector<std::int32_t>>& prompts,
                                  const std::vector<int>& max_tokens, int rounds,
                                  const ngemb::sampling_options& sampling, Accepted accepted) {
  auto model = load_mtp_lm(policy);
  ngemb::mtp_drafter<mtp_lm<Policy>> drafter(policy, model);
  CHECK(drafter.hidden_rows_needed());
  CHECK(drafter.vocab_size() == model.vocab_size());
  const auto width = static_cast<std::size_t>(model.config().hidden_size());
  const auto vocab = static_cast<std::size_t>(model.vocab_size());
  const std::size_t count = prompts.size();

  std::vector<mtp_run_sequence> sequences(count);
  std::vector<std::int32_t> ids;
  for (mtp_run_sequence& sequence : sequences) {
    sequence.id = model.start_sequence();
    drafter.start_sequence(sequence.id);
    ids.push_back(sequence.id);
  }
  // Runs the target on `fed`, keeps kept[b] tokens, takes its greedy `next` after them, and tells the drafter.
  const auto step = [&](const std::vector<std::vector<std::int32_t>>& fed, const std::vector<std::int32_t>& kept,
                        bool pending) {
    std::vector<std::int32_t> values;
    std::vector<std::int64_t> offsets{0};
    for (const auto& tokens : fed) {
      values.insert(values.end(), tokens.begin(), tokens.end());
      offsets.push_back(static_cast<std::int64_t>(values.size()));
    }
    const ngemb::ragged_view<const std::int32_t> batch{ngemb::view<const std::int32_t>(values),
                                                       ngemb::view<const std::int64_t>(offsets)};
    typename Policy::template buffer<float> logits(policy, values.size() * vocab);
    model.forward(policy, ngemb::view<const std::int32_t>(ids), batch, logits.as_view(),
                  {.pending = pending, .keep_hidden = true});
    const std::vector<float> host_logits = mtp_to_host(policy, ngemb::view<const float>(logits.as_view()));
    const std::vector<float> hidden = mtp_to_host(policy, model.hidden_rows());
    if (pending) {
      model.commit_pending(ngemb::view<const std::int32_t>(ids), ngemb::view<const std::int32_t>(kept));
    }
    std::vector<std::int32_t> next(count);
    for (std::size_t b = 0; b < count; ++b) {
      const auto last = static_cast<std::size_t>(offsets[b] + kept[b] - 1);
      next[b] = ngemb::sample_token(ngemb::view<const float>(host_logits.data() + last * vocab, vocab), {}, 0.0);
      mtp_run_sequence& sequence = sequences[b];
      if (!sequence.history.empty()) {
        sequence.history.pop_back();  // the previous next, fed first
      }
      sequence.history.insert(sequence.history.end(), fed[b].begin(), fed[b].begin() + kept[b]);
      sequence.history.push_back(next[b]);
      sequence.hidden.insert(sequence.hidden.end(), hidden.begin() + offsets[b] * static_cast<std::int64_t>(width),
                             hidden.begin() + (offsets[b] + kept[b]) * static_cast<std::int64_t>(width));
    }
    drafter.observe({.sequences = ngemb::view<const std::int32_t>(ids),
                     .fed = batch,
                     .kept = ngemb::view<const std::int32_t>(kept),
                     .next = ngemb::view<const std::int32_t>(next)});
    for (const mtp_run_sequence& sequence : sequences) {
      CHECK(drafter.length(sequence.id) == model.length(sequence.id));
      CHECK(drafter.length(sequence.id) == static_cast<std::int64_t>(sequence.history.size()) - 1);
    }
  };

  std::vector<std::int32_t> all(count);
  for (std::size_t b = 0; b < count; ++b) {
    all[b] = static_cast<std::int32_t>(prompts[b].size());
  }
  step(prompts, all, false);
  std::size_t checked = 0;
  std::vector<std::uint32_t> generated(count, 1);
  for (int round = 0; round < rounds; ++round) {
    std::vector<ngemb::draft_request> requests;
    for (std::size_t b = 0; b < count; ++b) {
      requests.push_back(
          {.sequence = sequences[b].id, .stream = b, .position = generated[b], .max_tokens = max_tokens[b]});
    }
    ngemb::draft_batch drafts;
    drafter.propose(ngemb::view<const ngemb::draft_request>(requests), sampling, drafts);
    checked += check_mtp_drafts(policy, model, sequences, requests, sampling, drafts);
    for (const mtp_run_sequence& sequence : sequences) {
      CHECK(drafter.length(sequence.id) == model.length(sequence.id));  // the draft positions are gone again
    }
    std::vector<std::vector<std::int32_t>> fed(count);
    std::vector<std::int32_t> kept(count);
    for (std::size_t b = 0; b < count; ++b) {
      const ngemb::view<const std::int32_t> chain = drafts.drafts_of(b);
      fed[b].push_back(sequences[b].history.back());
      fed[b].insert(fed[b].end(), chain.begin(), chain.end());
      kept[b] = 1 + std::min(accepted(round, b), static_cast<int>(chain.size()));
      generated[b] += static_cast<std::uint32_t>(kept[b]);
    }
    step(fed, kept, true);
  }
  for (const mtp_run_sequence& sequence : sequences) {
    drafter.end_sequence(sequence.id);
    model.end_sequence(sequence.id);
  }
  return checked;
}

}  // namespace ngemb_test
