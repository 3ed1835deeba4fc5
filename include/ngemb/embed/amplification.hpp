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

/// What an amplification is built for: the branch width H, and LayerNorm's epsilon (the others ignore it).
struct amplification_shape {
  std::int64_t width = 0;
  double epsilon = 1e-5;
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

  using shape = amplification_shape;

  /// Nothing to read or write: no parameters.
  template <class Policy>
  static no_amplification load(const Policy& /*policy*/, const checkpoint& /*source*/, const std::string& /*prefix*/,
                               const shape& /*dims*/) {
    return {};
  }
  template <class Policy>
  void save(const Policy& /*policy*/, const std::string& /*prefix*/, tensor_collection& /*out*/) const {}
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

  using shape = amplification_shape;

  template <class Policy>
  static sqrt_hidden_amplification load(const Policy& /*policy*/, const checkpoint& /*source*/,
                                        const std::string& /*prefix*/, const shape& /*dims*/) {
    return {};
  }
  template <class Policy>
  void save(const Policy& /*policy*/, const std::string& /*prefix*/, tensor_collection& /*out*/) const {}
};

/// a(n) = LayerNorm(n) = (n - mean) / sqrt(var + eps) * gamma + beta, population variance over the row.
/// gamma and beta live in policy memory as fp32; in a checkpoint `{prefix}.weight` and `{prefix}.bias` [H], with
/// prefix `ngram_names::norm(module)`.
template <class Policy = host_policy>
class layer_norm_amplification {
 public:
  static constexpr bool needs_statistics = true;
  using policy_type = Policy;
  using shape = amplification_shape;
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

  static layer_norm_amplification load(const Policy& policy, const checkpoint& source, const std::string& prefix,
                                       const shape& dims) {
    const std::int64_t extent[] = {dims.width};
    const auto gamma = read_tensor_as<float>(source, prefix + ".weight", extent);
    const auto beta = read_tensor_as<float>(source, prefix + ".bias", extent);
    return layer_norm_amplification(policy, view<const float>(gamma), view<const float>(beta), dims.epsilon);
  }

  void save(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    const auto width = static_cast<std::int64_t>(gamma_.size());
    out.add<float>(policy, prefix + ".weight", {width}, gamma_.as_view());
    out.add<float>(policy, prefix + ".bias", {width}, beta_.as_view());
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

namespace detail {

// One concept per member, so a type that is not an amplification fails on a static_assert naming what it lacks.
template <class A>
concept amplification_statistics_flag = requires {
  { A::needs_statistics } -> std::convertible_to<bool>;
};
template <class A>
concept amplification_ref = requires(const A& a, std::int64_t width, const float* row, row_statistics<float> stats) {
  { a.ref(width).statistics(row, width) } -> std::same_as<row_statistics<float>>;
  { a.ref(width).apply(1.0f, width, stats) } -> std::same_as<float>;
};
template <class A>
concept amplification_shape_type =
    requires { typename A::shape; } && std::constructible_from<typename A::shape, const amplification_shape&>;
template <class A, class Policy>
concept amplification_load = requires(const Policy& policy, const checkpoint& source, const std::string& prefix,
                                      const typename A::shape& dims) {
  { A::load(policy, source, prefix, dims) } -> std::same_as<A>;
};
template <class A, class Policy>
concept amplification_save = requires(const A& a, const Policy& policy, const std::string& prefix,
                                      tensor_collection& out) { a.save(policy, prefix, out); };

}  // namespace detail

/// What ngram_embedding needs of an amplification under `Policy`: the element step's ref, and its whole life in a
/// checkpoint (load from `ngram_names::norm(module)` with a shape built from amplification_shape, and save).
template <class A, class Policy>
concept amplification = detail::amplification_statistics_flag<A> && detail::amplification_ref<A> &&
                        detail::amplification_shape_type<A> && detail::amplification_load<A, Policy> &&
                        detail::amplification_save<A, Policy>;

namespace detail {

/// Each missing member of an amplification named by its own failure.
template <class A, class Policy>
constexpr bool check_amplification() {
  static_assert(amplification_statistics_flag<A>, "amplification: must have static needs_statistics (bool)");
  static_assert(amplification_ref<A>, "amplification: must have ref(width) with statistics(row, width) and "
                                      "apply(value, column, stats)");
  static_assert(amplification_shape_type<A>,
                "amplification: must have a shape type constructible from amplification_shape");
  static_assert(amplification_load<A, Policy>,
                "amplification: must have static load(policy, checkpoint, prefix, shape) returning it");
  static_assert(amplification_save<A, Policy>, "amplification: must have save(policy, prefix, tensor_collection&)");
  return true;
}

}  // namespace detail

static_assert(detail::check_amplification<no_amplification, host_policy>());
static_assert(detail::check_amplification<sqrt_hidden_amplification, host_policy>());
static_assert(detail::check_amplification<layer_norm_amplification<>, host_policy>());

}  // namespace ngemb
