#pragma once
// Speculative steps leave a model's caches exactly as plain decoding of the accepted tokens would: a property test
// over random patterns of drafts, acceptances, rejections and rows embedded ahead (matching, partly matching or
// not), run on the host by tests/causal_lm.cpp and on a device by tests/cuda/causal_lm.cu.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <random>
#include <vector>

#include "ngemb/core/views.hpp"
#include "ngemb/model/forward_options.hpp"

namespace ngemb_test {

/// Largest |a - b| over two equal-length host arrays.
inline double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double largest = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    largest = std::max(largest, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return largest;
}

/// Runs `model.forward` over a host batch and returns every token's logits on the host.
template <class Model>
std::vector<float> forward_logits(const typename Model::policy_type& policy, Model& model,
                                  const std::vector<std::int32_t>& sequences,
                                  const std::vector<std::vector<std::int32_t>>& batch, bool pending) {
  std::vector<std::int32_t> tokens;
  std::vector<std::int64_t> offsets{0};
  for (const auto& sequence_tokens : batch) {
    tokens.insert(tokens.end(), sequence_tokens.begin(), sequence_tokens.end());
    offsets.push_back(static_cast<std::int64_t>(tokens.size()));
  }
  const auto vocab = static_cast<std::size_t>(model.vocab_size());
  typename Model::policy_type::template buffer<float> logits(policy, tokens.size() * vocab);
  model.forward(policy, ngemb::view<const std::int32_t>(sequences),
                ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(tokens),
                                                       ngemb::view<const std::int64_t>(offsets)),
                logits.as_view(), {.logits = ngemb::logits_for::every_token, .pending = pending});
  std::vector<float> host(logits.size());
  // Unqualified: argument-dependent lookup finds the policy's own copy_to_host (device_policy.cuh comes later).
  copy_to_host(policy, ngemb::view<const float>(logits.data(), logits.size()), ngemb::view<float>(host));
  return host;
}

/// `tolerance`: fp32 rounding between a step of k+1 tokens and steps of other sizes (the GEMMs block differently).
template <class Model>
void check_pending_matches_plain(const typename Model::policy_type& policy, const std::filesystem::path& folder,
                                 unsigned seed, double tolerance) {
  constexpr int max_draft = 8;
  constexpr std::size_t sequences = 3;
  auto plain = Model::load(policy, folder, {.max_sequences = sequences, .max_positions = 192});
  auto speculative = Model::load(policy, folder, {.max_sequences = sequences, .max_positions = 192,
                                                  .max_draft = max_draft});
  const auto vocab = static_cast<std::int32_t>(plain.vocab_size());
  const auto hidden = static_cast<std::size_t>(plain.config().hidden_size());
  std::mt19937 random(seed);
  const auto token = [&] { return static_cast<std::int32_t>(random() % static_cast<unsigned>(vocab)); };
  std::vector<std::int32_t> plain_ids;
  std::vector<std::int32_t> speculative_ids;
  std::vector<std::vector<std::int32_t>> prompts(sequences);
  for (auto& prompt : prompts) {
    plain_ids.push_back(plain.start_sequence());
    speculative_ids.push_back(speculative.start_sequence());
    prompt.resize(5 + random() % 16);
    std::generate(prompt.begin(), prompt.end(), token);
  }
  CHECK(max_abs_difference(forward_logits(policy, plain, plain_ids, prompts, false),
                           forward_logits(policy, speculative, speculative_ids, prompts, false)) <= tolerance);
  std::vector<std::int32_t> next(sequences);  // each sequence's true next token, not yet fed
  std::generate(next.begin(), next.end(), token);
  std::uint64_t expected_reused = 0;
  for (int round = 0; round < 14; ++round) {
    const bool plain_step = round % 5 == 4;  // now and then the speculative model takes a plain step too
    std::vector<std::vector<std::int32_t>> fed(sequences);
    std::vector<std::vector<std::int32_t>> accepted(sequences);
    std::vector<std::int32_t> kept(sequences);
    for (std::size_t s = 0; s < sequences; ++s) {
      const int drafts = plain_step ? 0 : static_cast<int>(random() % (max_draft + 1));
      const int accepted_drafts = drafts == 0 ? 0 : static_cast<int>(random() % (drafts + 1));
      fed[s] = {next[s]};
      accepted[s] = {next[s]};
      for (int i = 0; i < drafts; ++i) {
        fed[s].push_back(token());
        if (i < accepted_drafts) {
          accepted[s].push_back(fed[s].back());
        }
      }
      kept[s] = 1 + accepted_drafts;
      // The token after the accepted ones: never the rejected draft, so the caches must drop it.
      do {
        next[s] = token();
      } while (accepted_drafts < drafts && next[s] == fed[s][static_cast<std::size_t>(accepted_drafts) + 1]);
    }
    if (!plain_step && random() % 3 != 0) {  // rows embedded ahead: a prefix of what is fed, then maybe a wrong token
      std::vector<std::int32_t> ahead_ids;
      std::vector<std::vector<std::int32_t>> ahead;
      for (std::size_t s = 0; s < sequences; ++s) {
        const std::size_t length = random() % (fed[s].size() + 1);
        if (length == 0) {
          continue;
        }
        ahead.emplace_back(fed[s].begin(), fed[s].begin() + static_cast<std::ptrdiff_t>(length));
        std::size_t same = length;
        if (random() % 3 == 0) {
          const std::size_t wrong = random() % length;
          ahead.back()[wrong] = (ahead.back()[wrong] + 1) % vocab;
          same = wrong;
        }
        expected_reused += same;
        ahead_ids.push_back(speculative_ids[s]);
      }
      std::vector<std::int32_t> tokens;
      std::vector<std::int64_t> offsets{0};
      for (const auto& sequence_tokens : ahead) {
        tokens.insert(tokens.end(), sequence_tokens.begin(), sequence_tokens.end());
        offsets.push_back(static_cast<std::int64_t>(tokens.size()));
      }
      typename Model::policy_type::template buffer<float> rows(policy, std::max<std::size_t>(1, tokens.size()) * hidden);
      speculative.embed_ahead(policy, ngemb::view<const std::int32_t>(ahead_ids),
                              ngemb::ragged_view<const std::int32_t>(ngemb::view<const std::int32_t>(tokens),
                                                                     ngemb::view<const std::int64_t>(offsets)),
                              rows.as_view().subview(0, tokens.size() * hidden));
    }
    const auto plain_logits = forward_logits(policy, plain, plain_ids, accepted, false);
    const auto speculative_logits = forward_logits(policy, speculative, speculative_ids, fed, !plain_step);
    // Row i of the accepted tokens: the same in both (rows of rejected drafts have no counterpart).
    std::size_t plain_row = 0;
    std::size_t speculative_row = 0;
    const auto width = static_cast<std::size_t>(vocab);
    for (std::size_t s = 0; s < sequences; ++s) {
      for (std::size_t i = 0; i < accepted[s].size(); ++i) {
        const std::vector<float> a(plain_logits.begin() + static_cast<std::ptrdiff_t>((plain_row + i) * width),
                                   plain_logits.begin() + static_cast<std::ptrdiff_t>((plain_row + i + 1) * width));
        const std::vector<float> b(
            speculative_logits.begin() + static_cast<std::ptrdiff_t>((speculative_row + i) * width),
            speculative_logits.begin() + static_cast<std::ptrdiff_t>((speculative_row + i + 1) * width));
        INFO("round " << round << ", sequence " << s << ", accepted token " << i);
        CHECK(max_abs_difference(a, b) <= tolerance);
      }
      plain_row += accepted[s].size();
      speculative_row += fed[s].size();
    }
    if (!plain_step) {
      for (std::size_t s = 0; s < sequences; ++s) {
        CHECK(speculative.pending(speculative_ids[s]) == static_cast<std::int32_t>(fed[s].size()));
      }
      speculative.commit_pending(ngemb::view<const std::int32_t>(speculative_ids), ngemb::view<const std::int32_t>(kept));
    }
    for (std::size_t s = 0; s < sequences; ++s) {
      CHECK(speculative.pending(speculative_ids[s]) == 0);
      CHECK(speculative.length(speculative_ids[s]) == plain.length(plain_ids[s]));
    }
    CHECK(speculative.embedding_counts().reused == expected_reused);
  }
  CHECK(expected_reused > 0);
  std::vector<std::vector<std::int32_t>> last(sequences);
  for (std::size_t s = 0; s < sequences; ++s) {
    last[s] = {next[s]};
  }
  CHECK(max_abs_difference(forward_logits(policy, plain, plain_ids, last, false),
                           forward_logits(policy, speculative, speculative_ids, last, false)) <= tolerance);
}

}  // namespace ngemb_test
