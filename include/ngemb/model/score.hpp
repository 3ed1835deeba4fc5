#pragma once
// The negative log-likelihood of a token stream under a causal model, in fixed windows: windows start at
// s = 0, W, 2W, ... while s < n - 1 (n tokens); window s feeds tokens[s, s + k) and predicts tokens[s + 1, s + k + 1),
// k = min(W, n - 1 - s), as an independent sequence from position 0 (fresh caches, empty n-gram look-back). So every
// token but the first is predicted once. Several windows run as one ragged forward.
//
//   const auto tokens = ngemb::byte_tokenizer::encode(text);      // BOS first: the first byte is predicted too
//   const auto result = ngemb::score(policy, model, tokens, {.window = 512});
//   const double bits_per_byte = result.nats / (static_cast<double>(result.predicted) * std::log(2.0));
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/model/forward_options.hpp"
#include "ngemb/model/generate.hpp"

namespace ngemb {

/// What score() needs besides a causal_model: how many sequences (windows) it may run at once.
template <class M>
concept scoring_model = causal_model<M> && requires(const M& model) {
  { model.max_sequences() } -> std::convertible_to<std::size_t>;
};

struct score_options {
  std::int64_t window = 512;  ///< tokens fed per window; at most the model's max_positions
  /// Tokens per forward (whole windows, at least one): the forward writes [tokens x vocab_size] fp32 logits.
  std::size_t max_batch_tokens = 4096;
};

struct score_result {
  double nats = 0.0;          ///< the summed negative log-likelihood of the predicted tokens
  std::size_t predicted = 0;  ///< how many tokens were predicted: n - 1 of n (0 when n < 2)
};

/// The summed NLL of `tokens` (host memory) in windows of options.window (see the header comment), in double from
/// fp32 logits. invalid_argument for a window outside [1, max_positions] or max_batch_tokens = 0,
/// token_out_of_range (position: the index in `tokens`) for a token outside [0, vocab_size), both before any
/// forward; invalid_argument when a predicted token's logits are not finite. Each forward starts up to
/// max_sequences() sequences and ends them: the model must have none started.
template <scoring_model Model>
score_result score(const typename Model::policy_type& policy, Model& model,
                   view<const typename Model::token_type> tokens, const score_options& options = {}) {
  using token_type = typename Model::token_type;
  using sequence_id = typename Model::sequence_id;
  if (options.window < 1 || options.window > model.max_positions()) {
    throw invalid_argument("score: window must be in [1, max_positions = " + std::to_string(model.max_positions()) +
                           "], got " + std::to_string(options.window));
  }
  if (options.max_batch_tokens == 0) {
    throw invalid_argument("score: max_batch_tokens must be >= 1");
  }
  const auto vocab = static_cast<std::int64_t>(model.vocab_size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      throw token_out_of_range("score: token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                   " is outside [0, " + std::to_string(vocab) + ")",
                               0, static_cast<std::int64_t>(i), static_cast<std::int64_t>(tokens[i]));
    }
  }
  score_result result;
  if (tokens.size() < 2) {
    return result;
  }
  const std::size_t targets = tokens.size() - 1;
  const auto window = static_cast<std::size_t>(options.window);
  const std::size_t max_windows = static_cast<std::size_t>(model.max_sequences());
  if (max_windows == 0) {
    throw invalid_argument("score: the model holds no sequences (max_sequences = 0)");
  }
  const std::size_t batch_tokens = std::min(targets, std::max(window, options.max_batch_tokens));
  const auto row_count = static_cast<std::size_t>(vocab);
  typename Model::policy_type::template buffer<float> logits(policy, batch_tokens * row_count);
  std::vector<float> host_logits(batch_tokens * row_count);
  std::vector<std::int64_t> offsets;
  for (std::size_t first = 0; first < targets;) {
    // As many whole windows as the token budget and the model's sequences allow, at least one.
    offsets.assign(1, 0);
    std::size_t end = first;
    while (end < targets && offsets.size() <= max_windows) {
      const std::size_t length = std::min(window, targets - end);
      if (offsets.size() > 1 && static_cast<std::size_t>(offsets.back()) + length > batch_tokens) {
        break;
      }
      end += length;
      offsets.push_back(static_cast<std::int64_t>(end - first));
    }
    const std::size_t count = end - first;
    const std::size_t windows = offsets.size() - 1;
    detail::sequence_guard<Model> guard(model, windows);
    const view<float> batch_logits = logits.as_view().subview(0, count * row_count);
    model.forward(policy, view<const sequence_id>(guard.ids),
                  ragged_view<const token_type>(tokens.subview(first, count), view<const std::int64_t>(offsets)),
                  batch_logits, {.logits = logits_for::every_token});
    copy_to_host(policy, view<const float>(batch_logits.data(), batch_logits.size()),
                 view<float>(host_logits.data(), batch_logits.size()));
    for (std::size_t row = 0; row < count; ++row) {
      // Token first + row predicts token first + row + 1: -log softmax, in double.
      const float* values = host_logits.data() + row * row_count;
      const double largest = *std::max_element(values, values + row_count);
      double total = 0.0;
      for (std::size_t v = 0; v < row_count; ++v) {
        total += std::exp(static_cast<double>(values[v]) - largest);
      }
      const auto target = static_cast<std::size_t>(tokens[first + row + 1]);
      const double nll = std::log(total) + largest - static_cast<double>(values[target]);
      if (!std::isfinite(nll)) {
        throw invalid_argument("score: the logits that predict token index " + std::to_string(first + row + 1) +
                               " are not finite");
      }
      result.nats += nll;
    }
    first = end;
  }
  result.predicted = targets;
  return result;
}

}  // namespace ngemb
