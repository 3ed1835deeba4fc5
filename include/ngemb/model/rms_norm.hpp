#pragma once
// RMSNorm (HF LlamaRMSNorm): y = x / sqrt(mean(x^2) + eps) * weight, row by row, in fp32.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/detail/row_checks.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

namespace detail {

/// One row: the mean square is taken over the whole row before any output is written, so y may alias x.
struct rms_norm_row_op {
  const float* x;
  float* y;
  const float* weight;
  std::int64_t hidden;
  float eps;

  NGEMB_HD void operator()(std::size_t row) const {
    const float* in = x + row * static_cast<std::size_t>(hidden);
    float* out = y + row * static_cast<std::size_t>(hidden);
    float sum_of_squares = 0.0f;
    for (std::int64_t i = 0; i < hidden; ++i) {
      sum_of_squares += in[i] * in[i];
    }
    const float inverse_rms = 1.0f / ::sqrtf(sum_of_squares / static_cast<float>(hidden) + eps);
    for (std::int64_t i = 0; i < hidden; ++i) {
      out[i] = in[i] * inverse_rms * weight[i];
    }
  }
};

}  // namespace detail

template <class Policy = host_policy>
class rms_norm {
 public:
  using policy_type = Policy;

  struct shape {
    std::int64_t hidden;
    float eps;
  };

  /// `weight` [H] is a host array; eps must be finite and >= 0.
  rms_norm(const Policy& policy, view<const float> weight, float eps)
      : hidden_(static_cast<std::int64_t>(weight.size())), eps_(eps) {
    if (weight.empty()) {
      throw shape_mismatch("rms_norm: the weight must hold H >= 1 values, got 0");
    }
    if (!(eps >= 0.0f) || !std::isfinite(eps)) {
      throw invalid_argument("rms_norm: eps must be finite and >= 0, got " + std::to_string(eps));
    }
    weight_ = upload(policy, weight);
  }

  /// `{prefix}.weight` [hidden], prefix e.g. "model.norm".
  static rms_norm load(const Policy& policy, const checkpoint& source, const std::string& prefix, const shape& dims) {
    const std::int64_t weight_shape[] = {dims.hidden};
    const auto weight = read_tensor_as<float>(source, prefix + ".weight", weight_shape);
    return rms_norm(policy, view<const float>(weight), dims.eps);
  }

  void save(const Policy& policy, const std::string& prefix, tensor_collection& tensors) const {
    tensors.add<float>(policy, prefix + ".weight", {hidden_}, weight_.as_view());
  }

  /// x and y [tokens x H] in policy memory; y may be the same memory as x.
  void forward(const Policy& policy, std::size_t tokens, view<const float> x, view<float> y) const {
    detail::require_rows("rms_norm: x", tokens, hidden_, x.size());
    detail::require_rows("rms_norm: y", tokens, hidden_, y.size());
    for_each_n(for_operations_of(policy, static_cast<std::size_t>(hidden_)), tokens,
               detail::rms_norm_row_op{x.data(), y.data(), weight_.data(), hidden_, eps_});
  }

  [[nodiscard]] std::int64_t hidden() const { return hidden_; }
  [[nodiscard]] float eps() const { return eps_; }

 private:
  std::int64_t hidden_;
  float eps_;
  typename Policy::template buffer<float> weight_;
};

}  // namespace ngemb
