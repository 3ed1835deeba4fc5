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

namespace detail {

/// Throws invalid_argument naming the id when a logit is NaN or infinite (a model that produced it is broken, and
/// sampling from it would hide that), or when there are no logits.
inline void check_logits(view<const float> logits, const std::string& who) {
  for (std::size_t id = 0; id < logits.size(); ++id) {
    if (!std::isfinite(logits[id])) {
      throw invalid_argument(who + ": logit of token " + std::to_string(id) + " is " + std::to_string(logits[id]) +
                             "; the model produced a non-finite value");
    }
  }
  if (logits.empty()) {
    throw invalid_argument(who + ": no logits");
  }
}

/// The distribution sampling draws from, before normalisation: `order` holds every id, most likely first, and its
/// first `kept` ids have probability weights[i] / total (the rest none).
struct kept_distribution {
  std::vector<std::int32_t> order;
  std::vector<double> weights;
  std::size_t kept = 0;
  double total = 0.0;
};

/// Temperature (> 0), then top-k, then top-p, as Hugging Face applies them, on checked logits.
inline kept_distribution keep(view<const float> logits, const sampling_options& options) {
  kept_distribution d;
  d.order.resize(logits.size());
  std::iota(d.order.begin(), d.order.end(), 0);
  // Most likely first, ties to the lower id, so the kept set does not depend on the sort's stability.
  std::sort(d.order.begin(), d.order.end(), [&](std::int32_t a, std::int32_t b) {
    return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
           (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
  });
  d.kept = options.top_k > 0 ? std::min(d.order.size(), static_cast<std::size_t>(options.top_k)) : d.order.size();
  const double largest = logits[static_cast<std::size_t>(d.order[0])];
  d.weights.resize(d.kept);
  for (std::size_t i = 0; i < d.kept; ++i) {
    d.weights[i] = std::exp((logits[static_cast<std::size_t>(d.order[i])] - largest) / options.temperature);
    d.total += d.weights[i];
  }
  if (options.top_p < 1.0f) {
    // weights[0] is exp(0) = 1 and top_p > 0, so the nucleus holds at least the most likely id.
    double cumulative = 0.0;
    std::size_t nucleus = 0;
    while (nucleus < d.kept && cumulative < options.top_p * d.total) {
      cumulative += d.weights[nucleus++];
    }
    d.kept = nucleus;
    d.weights.resize(nucleus);
    d.total = cumulative;
  }
  return d;
}

/// The id whose probability mass holds `uniform` (in [0, 1)) of the total, walking the ids in id order and skipping
/// zeros; `probabilities` are checked, >= 0 with a positive sum, and need not sum to 1.
template <class T>
std::int32_t inverse_cdf(view<const T> probabilities, double uniform) {
  double total = 0.0;
  for (const T p : probabilities) {
    total += p;
  }
  double draw = uniform * total;
  std::size_t last = 0;
  for (std::size_t id = 0; id < probabilities.size(); ++id) {
    if (probabilities[id] > 0) {
      draw -= probabilities[id];
      if (draw < 0.0) {
        return static_cast<std::int32_t>(id);
      }
      last = id;
    }
  }
  return static_cast<std::int32_t>(last);  // rounding left a sliver of the total
}

}  // namespace detail

/// The next token from `logits` [V] (host memory), with `uniform` in [0, 1) choosing among the kept ids by
/// inverse CDF, most likely first (greedy ignores it). Throws invalid_argument naming the id when a logit is NaN
/// or infinite.
inline std::int32_t sample_token(view<const float> logits, const sampling_options& options, double uniform) {
  options.validate();
  if (!(uniform >= 0.0 && uniform < 1.0)) {
    throw invalid_argument("sample_token: the uniform draw must be in [0, 1), got " + std::to_string(uniform));
  }
  detail::check_logits(logits, "sample_token");
  if (options.temperature == 0.0f) {
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const detail::kept_distribution d = detail::keep(logits, options);
  double draw = uniform * d.total;
  for (std::size_t i = 0; i < d.kept; ++i) {
    draw -= d.weights[i];
    if (draw < 0.0) {
      return d.order[i];
    }
  }
  return d.order[d.kept - 1];  // rounding left a sliver of the total
}

/// The distribution sample_token draws from, dense over the vocabulary: `probabilities` [V] gets each kept id's
/// probability (computed in double, written as float; they sum to 1 up to float rounding) and 0 for every other id.
/// Greedy gives one-hot at the argmax (ties to the lowest id). Speculative decoding compares these rows between
/// the target and a drafter (spec/acceptance.hpp). Throws as sample_token does, and shape_mismatch when the sizes
/// differ.
inline void token_probabilities(view<const float> logits, const sampling_options& options,
                                view<float> probabilities) {
  options.validate();
  detail::check_logits(logits, "token_probabilities");
  if (probabilities.size() != logits.size()) {
    throw shape_mismatch("token_probabilities: probabilities holds " + std::to_string(probabilities.size()) +
                         " values, expected one per logit (" + std::to_string(logits.size()) + ")");
  }
  std::fill(probabilities.begin(), probabilities.end(), 0.0f);
  if (options.temperature == 0.0f) {
    probabilities[static_cast<std::size_t>(std::max_element(logits.begin(), logits.end()) - logits.begin())] = 1.0f;
    return;
  }
  const detail::kept_distribution d = detail::keep(logits, options);
  for (std::size_t i = 0; i < d.kept; ++i) {
    probabilities[static_cast<std::size_t>(d.order[i])] = static_cast<float>(d.weights[i] / d.total);
  }
}

/// A token drawn from `probabilities` [V] (host memory; >= 0, not all zero, normalised here so float rounding in
/// the sum does not matter) by inverse CDF in id order with `uniform` in [0, 1): how a drafter samples its
/// proposal from the q row it reports. Throws invalid_argument naming a negative or non-finite entry.
inline std::int32_t sample_from_probabilities(view<const float> probabilities, double uniform) {
  if (!(uniform >= 0.0 && uniform < 1.0)) {
    throw invalid_argument("sample_from_probabilities: the uniform draw must be in [0, 1), got " +
                           std::to_string(uniform));
  }
  bool any = false;
  for (std::size_t id = 0; id < probabilities.size(); ++id) {
    if (!(probabilities[id] >= 0.0f) || !std::isfinite(probabilities[id])) {
      throw invalid_argument("sample_from_probabilities: probability of token " + std::to_string(id) + " is " +
                             std::to_string(probabilities[id]) + ", expected a finite value >= 0");
    }
    any = any || probabilities[id] > 0.0f;
  }
  if (!any) {
    throw invalid_argument("sample_from_probabilities: the " + std::to_string(probabilities.size()) +
                           " probabilities are all zero, expected a positive sum");
  }
  return detail::inverse_cdf(probabilities, uniform);
}

/// The next token from `logits` with the uniform of `stream` (draw 0 of its seed, sequence and step).
inline std::int32_t sample_token(view<const float> logits, const sampling_options& options,
                                 const token_stream& stream) {
  return sample_token(logits, options, stream.uniform());
}

}  // namespace ngemb
