#pragma once
// RoPE scaling from config.json (`rope_scaling` or `rope_parameters`), as transformers computes it
// (modeling_rope_utils.py `_compute_yarn_parameters`, modeling_longcat_flash.py `yarn_apply_mscale`):
//   default: inv_freq_i = theta^(-2i/d), cos and sin unscaled, softmax scale unchanged.
//   yarn:    inv_freq_i = interpolation_i * (1 - e_i) + extrapolation_i * e_i with extrapolation_i = theta^(-2i/d),
//            interpolation_i = extrapolation_i / factor and e_i = 1 - clamp((i - low) / (high - low), 0, 1), where
//            [low, high] is the correction range of beta_fast and beta_slow rotations over
//            original_max_position_embeddings (floored/ceiled when `truncate`, clamped to [0, d - 1]);
//            cos and sin are multiplied by the attention factor, and an MLA softmax scale by
//            yarn_get_mscale(factor, mscale_all_dim)^2 when mscale_all_dim is given.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <optional>

namespace ngemb {

struct rope_scaling {
  enum class type { none, yarn };  ///< none is transformers' "default"
  type kind = type::none;
  double factor = 1.0;
  std::int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;          ///< 0: absent (transformers tests these two for truth)
  double mscale_all_dim = 0.0;  ///< 0: absent
  std::optional<double> attention_factor;  ///< explicit; otherwise derived from factor and the mscales
  bool truncate = true;

  bool operator==(const rope_scaling&) const = default;

  /// 0.1 * mscale * ln(scale) + 1 for scale > 1, else 1.
  [[nodiscard]] static double yarn_get_mscale(double scale, double mscale = 1.0) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
  }

  /// The factor transformers multiplies cos and sin by (its `attention_scaling`), so each rotated half of q and k.
  [[nodiscard]] double rotary_attention_factor() const {
    if (kind == type::none) {
      return 1.0;
    }
    if (attention_factor) {
      return *attention_factor;
    }
    if (mscale != 0.0 && mscale_all_dim != 0.0) {
      return yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim);
    }
    return yarn_get_mscale(factor);
  }

  /// The factor an MLA softmax scale qk_head_dim^-0.5 is multiplied by (`yarn_apply_mscale`).
  [[nodiscard]] double softmax_scale_factor() const {
    if (kind == type::none || mscale_all_dim == 0.0) {
      return 1.0;
    }
    const double m = yarn_get_mscale(factor, mscale_all_dim);
    return m * m;
  }

  /// YaRN's correction range [low, high] over the rotary pairs of a `dim`-wide rotary head.
  struct correction_range {
    double low;
    double high;
  };
  [[nodiscard]] correction_range yarn_range(int dim, double theta) const {
    const auto correction_dim = [&](double rotations) {
      return dim * std::log(static_cast<double>(original_max_position_embeddings) /
                            (rotations * 2.0 * std::numbers::pi)) /
             (2.0 * std::log(theta));
    };
    double low = correction_dim(beta_fast);
    double high = correction_dim(beta_slow);
    if (truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) {
      high += 0.001;  // transformers' guard against a zero-width ramp
    }
    return {low, high};
  }
};

}  // namespace ngemb
