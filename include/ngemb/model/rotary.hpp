#pragma once
// Rotary position embedding. Two pairings of a head's dimensions:
//   rotary_embedding    HF Llama (GQA attention): dimension i < d/2 pairs with i + d/2 (rotate_half), rotated by
//                       position * theta^(-2i/d).
//   interleaved_rotary  DeepSeek/LongCat MLA (transformers' apply_rotary_pos_emb_interleave): pair i is (2i, 2i+1),
//                       and the output is written de-interleaved: out[i] = x[2i] cos - x[2i+1] sin,
//                       out[i + d/2] = x[2i+1] cos + x[2i] sin, with cos and sin times the RoPE attention factor.
//                       Its frequencies (rotary_frequencies) follow rope_scaling: default or YaRN.
// Angles and their sines are taken in double: position * inv_freq grows with the position, and fp32 would lose the
// angle's low digits long before the context ends.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/model/rope_scaling.hpp"

namespace ngemb {

struct rotary_embedding {
  int head_dim;  ///< even
  double theta;  ///< `rope_theta`

  /// Rotates one head vector [head_dim] in place for a token at `position`.
  NGEMB_HD void apply(float* head, std::int64_t position) const { apply(head, 1, 0, position); }

  /// Rotates `count` head vectors [head_dim], `stride` floats apart, in place for a token at `position`: each
  /// angle's cosine and sine are taken once for all of them (the query and key heads of a token share them).
  NGEMB_HD void apply(float* heads, int count, std::size_t stride, std::int64_t position) const {
    const int half = head_dim / 2;
    for (int i = 0; i < half; ++i) {
      const double inverse_frequency = ::pow(theta, -2.0 * i / head_dim);
      const double angle = static_cast<double>(position) * inverse_frequency;
      const double cosine = ::cos(angle);
      const double sine = ::sin(angle);
      for (int h = 0; h < count; ++h) {
        float* head = heads + static_cast<std::size_t>(h) * stride;
        const double first = head[i];
        const double second = head[i + half];
        head[i] = static_cast<float>(first * cosine - second * sine);
        head[i + half] = static_cast<float>(second * cosine + first * sine);
      }
    }
  }
};

struct rotary_frequencies {
  int dim;        ///< even
  double theta;   ///< `rope_theta`
  bool yarn = false;
  double factor = 1.0;
  double ramp_low = 0.0;
  double ramp_high = 1.0;
  double attention_factor = 1.0;  ///< multiplies cos and sin (rope_scaling::rotary_attention_factor)

  /// The frequencies of `scaling` (host only: it validates the fields it uses).
  static rotary_frequencies of(int dim, double theta, const rope_scaling& scaling) {
    if (dim < 2 || dim % 2 != 0) {
      throw invalid_argument("rotary_frequencies: the rotary dim must be even and >= 2, got " + std::to_string(dim));
    }
    if (!(theta > 0.0) || !std::isfinite(theta)) {
      throw invalid_argument("rotary_frequencies: rope_theta must be finite and > 0, got " + std::to_string(theta));
    }
    rotary_frequencies frequencies{dim, theta};
    if (scaling.kind == rope_scaling::type::yarn) {
      if (!(scaling.factor > 0.0) || !std::isfinite(scaling.factor)) {
        throw invalid_argument("rotary_frequencies: rope_scaling.factor must be finite and > 0, got " +
                               std::to_string(scaling.factor));
      }
      if (scaling.original_max_position_embeddings < 1) {
        throw invalid_argument("rotary_frequencies: rope_scaling.original_max_position_embeddings must be >= 1, got " +
                               std::to_string(scaling.original_max_position_embeddings));
      }
      const rope_scaling::correction_range range = scaling.yarn_range(dim, theta);
      frequencies.yarn = true;
      frequencies.factor = scaling.factor;
      frequencies.ramp_low = range.low;
      frequencies.ramp_high = range.high;
    }
    frequencies.attention_factor = scaling.rotary_attention_factor();
    return frequencies;
  }

  NGEMB_HD double inverse(int pair) const {
    const double extrapolation = ::pow(theta, -2.0 * pair / dim);
    if (!yarn) {
      return extrapolation;
    }
    double ramp = (pair - ramp_low) / (ramp_high - ramp_low);
    ramp = ramp < 0.0 ? 0.0 : (ramp > 1.0 ? 1.0 : ramp);
    return extrapolation * (1.0 - ramp) + extrapolation / factor * ramp;
  }

  /// All dim/2 inverse frequencies, for inspection.
  [[nodiscard]] std::vector<double> inverses() const {
    std::vector<double> values;
    for (int pair = 0; pair < dim / 2; ++pair) {
      values.push_back(inverse(pair));
    }
    return values;
  }
};

struct interleaved_rotary {
  rotary_frequencies frequencies;

  /// Rotates `in` [dim] for a token at `position` into `out` [dim] (not aliasing `in`), scaled by `input_scale`
  /// first; Out is float or a storage type built from float.
  template <class Out>
  NGEMB_HD void apply(const float* in, Out* out, std::int64_t position, float input_scale = 1.0f) const {
    const int half = frequencies.dim / 2;
    for (int i = 0; i < half; ++i) {
      const double angle = static_cast<double>(position) * frequencies.inverse(i);
      const double cosine = ::cos(angle) * frequencies.attention_factor;
      const double sine = ::sin(angle) * frequencies.attention_factor;
      const double even = static_cast<double>(in[2 * i] * input_scale);
      const double odd = static_cast<double>(in[2 * i + 1] * input_scale);
      out[i] = Out(static_cast<float>(even * cosine - odd * sine));
      out[i + half] = Out(static_cast<float>(odd * cosine + even * sine));
    }
  }
};

}  // namespace ngemb
