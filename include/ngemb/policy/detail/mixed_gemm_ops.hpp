#pragma once
// What the host and device mixed-precision GEMMs share: the weight types they accept and the widening of weight
// rows to fp32 (exact for bf16 and fp16), one element per call.
#include <cstddef>
#include <type_traits>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/macros.hpp"

namespace ngemb {

/// Reduced-precision weight types gemm_nt multiplies with fp32 activations (fp32 accumulation).
template <class W>
concept reduced_weight = std::is_same_v<W, bf16> || std::is_same_v<W, fp16>;

namespace detail {

/// widened[i] = float(weights[i]).
template <class W>
struct widen_op {
  const W* weights;
  float* widened;

  NGEMB_HD void operator()(std::size_t i) const { widened[i] = to_float(weights[i]); }
};

/// widened[i] = float(weights[row * stride + column]) for i = row * columns + column: rows `stride` apart packed
/// densely (a block of columns of a wider weight matrix).
template <class W>
struct widen_rows_op {
  const W* weights;
  float* widened;
  std::size_t columns;
  std::size_t stride;

  NGEMB_HD void operator()(std::size_t i) const { widened[i] = to_float(weights[i / columns * stride + i % columns]); }
};

}  // namespace detail

}  // namespace ngemb
