#pragma once
// Embedding amplification (paper, initialisation section): what happens to the n-gram branch n = sum_i W_i E_i[id]
// before it joins the base row. The forward is e = (E_0[x] + a(n)) / (1 + T) for every choice, so `none` is the
// official module. Each amplification hands element operations a ref with
//   statistics(row, width)  per-token numbers the element step needs (LayerNorm: mean and 1/std), and
//   apply(value, column, stats)  the amplified element.
#include <cmath>
#include <concepts>
#include <type_traits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

/// Per-token numbers an amplification computes once per row.
template <class Acc>
struct row_statistics {
  Acc mean = 0;
  Acc inverse_std = 1;
};

/// a(n) = n: the official module.
struct no_amplification {
  static constexpr bool needs_statistics = false;
  struct ref_type {
    template <class Acc>
    NGEMB_HD row_statistics<Acc> statistics(const Acc* /*row*/, std::int64_t /*width*/) const { return {}; }
    template <class Acc>
    NGEMB_HD Acc apply(Acc value, std::int64_t /*column*/, row_statistics<Acc> /*stats*/) const { return value; }
  };
  [[nodiscard]] ref_type ref(std::int64_t /*width*/) const { return {}; }

  template <class Policy>
  static no_amplification load(const Policy& /*policy*/, const checkpoint& /*checkpoint*/,
                               std::int64_t /*width*/, const ngram_tensor_names& /*names*/ = {}) {
    return {};
  }
  /// Nothing to write: no parameters.
  template <class Policy>
  void save(const Policy& /*policy*/, tensor_collection& /*out*/, const ngram_tensor_names& /*names*/ = {}) const {}
};

/// a(n) = sqrt(H) * n.
struct sqrt_hidden_amplification {
  static constexpr bool needs_statistics = false;
  struct ref_type {
    double scale;
    template <class Acc>
    NGEMB_HD row_statistics<Acc> statistics(const Acc* /*row*/, std::int64_t /*width*/) const { return {}; }
    template <class Acc>
    NGEMB_HD Acc apply(Acc value, std::int64_t /*column*/, row_statistics<Acc> /*stats*/) const {
      return value * static_cast<Acc>(scale);
    }
  };
  [[nodiscard]] ref_type ref(std::int64_t width) const { return {std::sqrt(static_cast<double>(width))}; }

  template <class Policy>
  static sqrt_hidden_amplification load(const Policy& /*policy*/, const checkpoint& /*checkpoint*/,
                                        std::int64_t /*width*/, const ngram_tensor_names& /*names*/ = {}) {
    return {};
  }
  template <class Policy>
  void save(const Policy& /*policy*/, tensor_collection& /*out*/, const ngram_tensor_names& /*names*/ = {}) const {}
};

/// a(n) = LayerNorm(n) = (n - mean) / sqrt(var + eps) * gamma + beta, population variance over the row.
/// gamma and beta live in policy memory as fp32: `{prefix}.norm.weight` and `{prefix}.norm.bias` [H].
template <class Policy = host_policy>
class layer_norm_amplification {
 public:
  static constexpr bool needs_statistics = true;
  struct ref_type {
    const float* gamma;
    const float* beta;
    double epsilon;

    /// Two passes (mean, then squared deviations): no cancellation for rows far from zero mean.
    template <class Acc>
    NGEMB_HD row_statistics<Acc> statistics(const Acc* row, std::int64_t width) const {
      Acc sum = 0;
      for (std::int64_t column = 0; column < width; ++column) {
        sum += row[column];
      }
      const Acc mean = sum / static_cast<Acc>(width);
      Acc squares = 0;
      for (std::int64_t column = 0; column < width; ++column) {
        squares += (row[column] - mean) * (row[column] - mean);
      }
      const Acc variance = squares / static_cast<Acc>(width);
      const Acc shifted = variance + static_cast<Acc>(epsilon);
      // The C functions exist on host and device alike, unlike std::sqrt.
      if constexpr (std::is_same_v<Acc, float>) {
        return {mean, 1.0f / ::sqrtf(shifted)};
      } else {
        return {mean, static_cast<Acc>(1) / ::sqrt(shifted)};
      }
    }
    template <class Acc>
    NGEMB_HD Acc apply(Acc value, std::int64_t column, row_statistics<Acc> stats) const {
      return (value - stats.mean) * stats.inverse_std * static_cast<Acc>(gamma[column]) + static_cast<Acc>(beta[column]);
    }
  };

  /// gamma and beta from host arrays of the branch width.
  layer_norm_amplification(const Policy& policy, view<const float> gamma, view<const float> beta, double epsilon = 1e-5)
      : gamma_(upload(policy, gamma)), beta_(upload(policy, beta)), epsilon_(epsilon) {
    if (gamma.size() != beta.size() || gamma.empty()) {
      throw shape_mismatch("layer_norm_amplification: gamma has " + std::to_string(gamma.size()) + " elements, beta " +
                           std::to_string(beta.size()) + "; both need the branch width");
    }
    if (!(epsilon > 0.0)) {
      throw invalid_argument("layer_norm_amplification: epsilon must be > 0, got " + std::to_string(epsilon));
    }
  }

  static layer_norm_amplification load(const Policy& policy, const checkpoint& checkpoint,
                                       std::int64_t width, const ngram_tensor_names& names = {},
                                       double epsilon = 1e-5) {
    const std::int64_t shape[] = {width};
    const auto gamma = read_tensor_as<float>(checkpoint, names.norm_weight(), shape);
    const auto beta = read_tensor_as<float>(checkpoint, names.norm_bias(), shape);
    return layer_norm_amplification(policy, view<const float>(gamma), view<const float>(beta), epsilon);
  }

  void save(const Policy& policy, tensor_collection& out, const ngram_tensor_names& names = {}) const {
    const auto width = static_cast<std::int64_t>(gamma_.size());
    out.add<float>(policy, names.norm_weight(), {width}, gamma_.as_view());
    out.add<float>(policy, names.norm_bias(), {width}, beta_.as_view());
  }

  [[nodiscard]] ref_type ref(std::int64_t width) const {
    if (static_cast<std::size_t>(width) != gamma_.size()) {
      throw shape_mismatch("layer_norm_amplification: built for width " + std::to_string(gamma_.size()) +
                           ", used on width " + std::to_string(width));
    }
    return {gamma_.data(), beta_.data(), epsilon_};
  }

 private:
  typename Policy::template buffer<float> gamma_;
  typename Policy::template buffer<float> beta_;
  double epsilon_;
};

/// What ngram_embedding needs of an amplification.
template <class A>
concept amplification = requires(const A& a, std::int64_t width, const float* row, row_statistics<float> stats) {
  { A::needs_statistics } -> std::convertible_to<bool>;
  { a.ref(width).statistics(row, width) } -> std::same_as<row_statistics<float>>;
  { a.ref(width).apply(1.0f, width, stats) } -> std::same_as<float>;
};

}  // namespace ngemb
