#pragma once
// Next-token choice from one row of logits: greedy (temperature 0) or seeded sampling with temperature, top-k and
// top-p (nucleus), as Hugging Face's generate applies them (temperature, then top-k, then top-p). The random
// stream is the library's own (splitmix64 seeding, 53-bit uniforms), so a seed gives the same tokens on every
// platform and standard library.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
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

/// A small, fully specified generator: splitmix64 (Steele, Lea, Flood 2014).
class token_rng {
 public:
  explicit token_rng(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

/// The next token from `logits` [V] (host memory). Throws invalid_argument naming the id when a logit is NaN or
/// infinite: a model that produced it is broken, and sampling from it would hide that.
inline std::int32_t sample_token(view<const float> logits, const sampling_options& options, token_rng& rng) {
  options.validate();
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
  double draw = rng.uniform() * total;
  for (std::size_t i = 0; i < kept; ++i) {
    draw -= weights[i];
    if (draw < 0.0) {
      return order[i];
    }
  }
  return order[kept - 1];  // rounding left a sliver of the total
}

}  // namespace ngemb
