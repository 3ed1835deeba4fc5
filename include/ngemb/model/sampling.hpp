#pragma once
// Next-token choice from one row of logits: greedy (temperature 0) or seeded sampling with temperature, top-k and
// top-p (nucleus), as Hugging Face's generate applies them (temperature, then top-k, then top-p). The one uniform
// a sampled token needs comes from the caller: generate takes it from token_stream{seed, sequence, step}
// (Philox4x32-10, core/philox.hpp), so a seed gives the same tokens on every platform, standard library and
// device, and each (sequence, step) draws independently of the others and of what else is in the batch.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/philox.hpp"
#include "ngemb/core/views.hpp"

namespace ngemb {

struct sampling_options {
  float temperature = 0.0f;  ///< 0: greedy (argmax, ties to the lowest id)
  int top_k = 0;             ///< keep the k most likely ids; 0: all
  float top_p = 1.0f;        ///< keep the smallest most-likely set whose probability reaches top_p; 1: all
  std::uint64_t seed = 0;

  void validate() const {
    if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
      throw invalid_argument("sampling: temperature must be finite and >= 0, got " + std::to_string(temperature));
    }
    if (top_k < 0) {
      throw invalid_argument("sampling: top_k must be >= 0 (0 keeps all), got " + std::to_string(top_k));
    }
    if (!(top_p > 0.0f && top_p <= 1.0f)) {
      throw invalid_argument("sampling: top_p must be in (0, 1], got " + std::to_string(top_p));
    }
  }
};

/// The next token from `logits` [V] (host memory), with `uniform` in [0, 1) choosing among the kept ids by
/// inverse CDF (greedy ignores it). Throws invalid_argument naming the id when a logit is NaN or infinite: a model
/// that produced it is broken, and sampling from it would hide that.
inline std::int32_t sample_token(view<const float> logits, const sampling_options& options, double uniform) {
  options.validate();
  if (!(uniform >= 0.0 && uniform < 1.0)) {
    throw invalid_argument("sample_token: the uniform draw must be in [0, 1), got " + std::to_string(uniform));
  }
  for (std::size_t id = 0; id < logits.size(); ++id) {
    if (!std::isfinite(logits[id])) {
      throw invalid_argument("sample_token: logit of token " + std::to_string(id) + " is " +
                             std::to_string(logits[id]) + "; the model produced a non-finite value");
    }
  }
  if (logits.empty()) {
    throw invalid_argument("sample_token: no logits");
  }
  if (options.temperature == 0.0f) {
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  std::vector<std::int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  // Most likely first, ties to the lower id, so the kept set does not depend on the sort's stability.
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
           (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
  });
  std::size_t kept = options.top_k > 0 ? std::min(order.size(), static_cast<std::size_t>(options.top_k)) : order.size();
  const double largest = logits[static_cast<std::size_t>(order[0])];
  std::vector<double> weights(kept);
  double total = 0.0;
  for (std::size_t i = 0; i < kept; ++i) {
    weights[i] = std::exp((logits[static_cast<std::size_t>(order[i])] - largest) / options.temperature);
    total += weights[i];
  }
  if (options.top_p < 1.0f) {
    double cumulative = 0.0;
    std::size_t nucleus = 0;
    while (nucleus < kept && cumulative < options.top_p * total) {
      cumulative += weights[nucleus++];
    }
    kept = std::max<std::size_t>(nucleus, 1);
    total = cumulative > 0.0 ? cumulative : weights[0];
  }
  double draw = uniform * total;
  for (std::size_t i = 0; i < kept; ++i) {
    draw -= weights[i];
    if (draw < 0.0) {
      return order[i];
    }
  }
  return order[kept - 1];  // rounding left a sliver of the total
}

/// The next token from `logits` with the uniform of `stream` (draw 0 of its seed, sequence and step).
inline std::int32_t sample_token(view<const float> logits, const sampling_options& options,
                                 const token_stream& stream) {
  return sample_token(logits, options, stream.uniform());
}

}  // namespace ngemb
