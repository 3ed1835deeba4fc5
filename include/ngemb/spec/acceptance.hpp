#pragma once
// The acceptance rule of speculative sampling (Leviathan, Kalman and Matias, "Fast Inference from Transformers via
// Speculative Decoding", arXiv 2211.17192): a draft token d drawn from the drafter's q is kept with probability
// min(1, p(d) / q(d)), where p is the target's distribution for the same position; at the first rejection the token
// is drawn instead from the residual norm(max(p - q, 0)), and after a fully accepted chain a bonus token is drawn
// from the target's next row. Every emitted token is then distributed exactly as sampling the target alone would
// give it, whatever the drafter proposes. Greedy decoding keeps drafts while they equal the target's argmax.
//
// p and q are the rows of token_probabilities (model/sampling.hpp): the distribution sample_token draws from, after
// temperature, top-k and top-p. The random choices use token_stream{seed, stream, position}'s draws named by
// speculative_draws (spec/drafter.hpp), so a seed gives the same tokens whatever else is in the batch.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/philox.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/sampling.hpp"
#include "ngemb/spec/drafter.hpp"

namespace ngemb {

/// The outcome of verifying one chain of k drafts.
struct chain_verdict {
  int accepted = 0;       ///< how many drafts were accepted (0..k), a prefix of the chain
  std::int32_t next = 0;  ///< the token emitted after them: the correction at the first rejection, or the bonus
};

namespace detail {

/// A probability row as the distribution it stands for: `values` divided by their fp64 sum, or one-hot at `token`
/// when `values` is empty (a deterministic proposal, without a V-sized row). Dividing by the sum matters: a row
/// written as float sums to 1 only up to rounding, and the rule is exact only when p and q sum to exactly 1 (then
/// the mass rejected, sum_d q(d) (1 - min(1, p(d) / q(d))), equals the residual's mass, sum max(p - q, 0)).
struct probability_row {
  view<const float> values;
  std::int32_t token = 0;
  double total = 1.0;

  double operator[](std::size_t id) const {
    if (values.empty()) {
      return id == static_cast<std::size_t>(token) ? 1.0 : 0.0;
    }
    return values[id] / total;
  }
};

/// A dense row, checked: finite entries >= 0 with a positive sum; `who` names it in the errors.
inline probability_row dense_row(view<const float> values, const std::string& who) {
  double total = 0.0;
  for (std::size_t id = 0; id < values.size(); ++id) {
    if (!(values[id] >= 0.0f) || !std::isfinite(values[id])) {
      throw invalid_argument(who + ": probability of token " + std::to_string(id) + " is " +
                             std::to_string(values[id]) + ", expected a finite value >= 0");
    }
    total += values[id];
  }
  if (!(total > 0.0)) {
    throw invalid_argument(who + ": the " + std::to_string(values.size()) +
                           " probabilities sum to 0, expected a distribution");
  }
  return {values, 0, total};
}

/// Throws unless `token` is an id in [0, vocab) that q gives a positive probability: a drafter cannot have drawn a
/// token its own q excludes, and p(d) / q(d) would be undefined.
inline void check_proposed(const probability_row& q, std::size_t vocab, std::int32_t token, const std::string& who) {
  if (token < 0 || static_cast<std::size_t>(token) >= vocab) {
    throw invalid_argument(who + ": token " + std::to_string(token) + " is outside the vocabulary [0, " +
                           std::to_string(vocab) + ")");
  }
  if (!(q[static_cast<std::size_t>(token)] > 0.0)) {
    throw invalid_argument(who + ": token " + std::to_string(token) +
                           " has probability 0 under the q it was drawn from, expected > 0");
  }
}

inline double acceptance_probability(const probability_row& p, const probability_row& q, std::int32_t token) {
  const auto id = static_cast<std::size_t>(token);
  return std::min(1.0, p[id] / q[id]);
}

inline void residual_distribution(const probability_row& p, const probability_row& q, view<double> out) {
  double total = 0.0;
  for (std::size_t id = 0; id < out.size(); ++id) {
    out[id] = std::max(p[id] - q[id], 0.0);
    total += out[id];
  }
  // All zero only when p == q up to rounding: a rejection then had probability ~0, and p is the right answer.
  for (std::size_t id = 0; id < out.size(); ++id) {
    out[id] = total > 0.0 ? out[id] / total : p[id];
  }
}

/// Throws shape_mismatch unless p, q and the output (`out` values) have the same, non-zero size.
inline void check_same_size(const std::string& who, view<const float> p, view<const float> q, std::size_t out) {
  if (p.empty() || q.size() != p.size() || out != p.size()) {
    throw shape_mismatch(who + ": p, q and the output hold " + std::to_string(p.size()) + ", " +
                         std::to_string(q.size()) + " and " + std::to_string(out) +
                         " values, expected one per token of the same vocabulary (> 0)");
  }
}

}  // namespace detail

/// min(1, p(token) / q(token)): the probability that a draft `token` drawn from q is accepted against the target's
/// p (rows [V] in host memory, each taken as divided by its sum). Throws invalid_argument when q(token) is 0 or the
/// token is outside [0, V), and shape_mismatch when the sizes differ.
inline double acceptance_probability(view<const float> p, view<const float> q, std::int32_t token) {
  detail::check_same_size("acceptance_probability", p, q, p.size());
  const detail::probability_row target = detail::dense_row(p, "acceptance_probability: p");
  const detail::probability_row draft = detail::dense_row(q, "acceptance_probability: q");
  detail::check_proposed(draft, q.size(), token, "acceptance_probability");
  return detail::acceptance_probability(target, draft, token);
}

/// out [V] = norm(max(p - q, 0)), the distribution a rejected draft's replacement is drawn from (p when that is all
/// zero, which happens only when p == q up to rounding). Rows as for acceptance_probability.
inline void residual_distribution(view<const float> p, view<const float> q, view<double> out) {
  detail::check_same_size("residual_distribution", p, q, out.size());
  detail::residual_distribution(detail::dense_row(p, "residual_distribution: p"),
                                detail::dense_row(q, "residual_distribution: q"), out);
}

/// Verifies one chain of k drafts against the target (all host memory):
/// - `target_logits` [(k + 1) x V]: row i holds the target's logits for the position of draft i, row k those for the
///   token after the last draft (the bonus);
/// - `drafts` [k] (k may be 0);
/// - `draft_probabilities` [k x V]: the q row each draft was drawn from, or empty when the drafts are deterministic
///   (q one-hot at each draft);
/// - `stream`, `position`: the sequence's Philox stream and the index, among its generated tokens, of draft 0.
/// Greedy (temperature 0) accepts drafts while each equals its row's argmax (ties to the lowest id, as sample_token)
/// and emits the argmax of the row after them. Sampling accepts draft i when
/// token_stream{seed, stream, position + i}.uniform(speculative_draws::acceptance) < min(1, p_i(d) / q_i(d)) and,
/// at the first rejection, draws the correction from residual_distribution(p_i, q_i) with the same token_stream's
/// speculative_draws::correction; after k acceptances it draws the bonus from p_k the same way, at position + k.
/// All input is checked before any draw, so bad input throws whatever the seed: shape_mismatch for sizes,
/// invalid_argument for draft ids outside [0, V), a draft that its q row gives probability 0, a bad q row or a
/// non-finite logit.
inline chain_verdict verify_chain(view<const float> target_logits, view<const std::int32_t> drafts,
                                  view<const float> draft_probabilities, const sampling_options& sampling,
                                  std::uint64_t stream, std::uint32_t position) {
  sampling.validate();
  const std::size_t k = drafts.size();
  if (target_logits.empty() || target_logits.size() % (k + 1) != 0) {
    throw shape_mismatch("verify_chain: target_logits holds " + std::to_string(target_logits.size()) +
                         " values, expected (k + 1) x V for k = " + std::to_string(k) + " drafts: " +
                         std::to_string(k + 1) + " rows of the vocabulary size");
  }
  const std::size_t vocab = target_logits.size() / (k + 1);
  if (!draft_probabilities.empty() && draft_probabilities.size() != k * vocab) {
    throw shape_mismatch("verify_chain: draft_probabilities holds " + std::to_string(draft_probabilities.size()) +
                         " values, expected k x V = " + std::to_string(k * vocab) +
                         " (or none for deterministic drafts)");
  }
  const auto row = [&](std::size_t i) { return target_logits.subview(i * vocab, vocab); };
  for (std::size_t i = 0; i <= k; ++i) {
    detail::check_logits(row(i), "verify_chain: target row " + std::to_string(i));
  }
  std::vector<detail::probability_row> q;
  q.reserve(k);
  for (std::size_t i = 0; i < k; ++i) {
    const std::string who = "verify_chain: draft " + std::to_string(i);
    q.push_back(draft_probabilities.empty()
                    ? detail::probability_row{{}, drafts[i], 1.0}
                    : detail::dense_row(draft_probabilities.subview(i * vocab, vocab), who + "'s q row"));
    detail::check_proposed(q.back(), vocab, drafts[i], who);
  }

  if (sampling.temperature == 0.0f) {
    const auto argmax = [&](std::size_t i) { return sample_token(row(i), sampling, 0.0); };
    std::size_t accepted = 0;
    while (accepted < k && drafts[accepted] == argmax(accepted)) {
      ++accepted;
    }
    return {static_cast<int>(accepted), argmax(accepted)};
  }
  std::vector<float> p(vocab);
  for (std::size_t i = 0;; ++i) {
    token_probabilities(row(i), sampling, p);
    const detail::probability_row target = detail::dense_row(p, "verify_chain: target row " + std::to_string(i));
    const token_stream draws{sampling.seed, stream, static_cast<std::uint32_t>(position + i)};
    if (i == k) {
      return {static_cast<int>(k),
              detail::inverse_cdf(view<const float>(p), draws.uniform(speculative_draws::correction))};
    }
    if (draws.uniform(speculative_draws::acceptance) < detail::acceptance_probability(target, q[i], drafts[i])) {
      continue;
    }
    std::vector<double> residual(vocab);
    detail::residual_distribution(target, q[i], residual);
    return {static_cast<int>(i),
            detail::inverse_cdf(view<const double>(residual), draws.uniform(speculative_draws::correction))};
  }
}

}  // namespace ngemb
