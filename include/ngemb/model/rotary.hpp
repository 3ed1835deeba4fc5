#pragma once
// Rotary position embedding, HF Llama convention: dimension i < d/2 pairs with i + d/2 (rotate_half), rotated by
// position * theta^(-2i/d). Angles and their sines are taken in double: position * inv_freq grows with the
// position, and fp32 would lose the angle's low digits long before the context ends.
#include <cmath>
#include <cstdint>

#include "ngemb/core/macros.hpp"

namespace ngemb {

struct rotary_embedding {
  int head_dim;  ///< even
  double theta;  ///< `rope_theta`

  /// Rotates one head vector [head_dim] in place for a token at `position`.
  NGEMB_HD void apply(float* head, std::int64_t position) const {
    const int half = head_dim / 2;
    for (int i = 0; i < half; ++i) {
      const double inverse_frequency = ::pow(theta, -2.0 * i / head_dim);
      const double angle = static_cast<double>(position) * inverse_frequency;
      const double cosine = ::cos(angle);
      const double sine = ::sin(angle);
      const double first = head[i];
      const double second = head[i + half];
      head[i] = static_cast<float>(first * cosine - second * sine);
      head[i + half] = static_cast<float>(second * cosine + first * sine);
    }
  }
};

}  // namespace ngemb
