#pragma once
// What the dense SwiGLU FFN (ffn/swiglu.hpp) and the MoE experts (moe/moe.hpp) share: the weight layout (W_gate and
// W_up stacked into one [2I x H] matrix per FFN, so one GEMM computes both), its shape checks, the activation, and
// the forward of a batch of rows through one FFN.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/policy/gemm.hpp"

namespace ngemb::detail {

/// activated[r, j] = SiLU(gate_up[r, j]) * gate_up[r, width + j]: each row of the stacked GEMM's output holds the
/// gate half then the up half.
struct silu_mul_op {
  const float* gate_up;  ///< [rows x 2 width]
  float* activated;      ///< [rows x width]
  std::size_t width;

  NGEMB_HD void operator()(std::size_t i) const {
    const std::size_t row = i / width;
    const std::size_t column = i % width;
    const float gate = gate_up[row * 2 * width + column];
    const float up = gate_up[row * 2 * width + width + column];
    activated[i] = gate / (1.0f + ::expf(-gate)) * up;
  }
};

/// `experts` FFNs' weights as host arrays: gate and up [experts x I x H], down [experts x H x I].
inline void check_ffn_weights(const std::string& owner, std::int64_t experts, std::int64_t hidden,
                              std::int64_t intermediate, std::size_t gate, std::size_t up, std::size_t down) {
  if (hidden < 1 || intermediate < 1) {
    throw invalid_argument(owner + ": hidden and intermediate sizes must be >= 1, got H = " + std::to_string(hidden) +
                           ", I = " + std::to_string(intermediate));
  }
  const std::string stack = experts == 1 ? "" : std::to_string(experts) + " x ";
  const auto require = [&](const char* name, std::size_t got, std::int64_t rows, std::int64_t columns) {
    const auto expected = static_cast<std::size_t>(experts * rows * columns);
    if (got != expected) {
      throw shape_mismatch(owner + ": " + name + " must hold " + stack + std::to_string(rows) + " x " +
                           std::to_string(columns) + " = " + std::to_string(expected) + " values, got " +
                           std::to_string(got));
    }
  };
  require("gate_proj", gate, intermediate, hidden);
  require("up_proj", up, intermediate, hidden);
  require("down_proj", down, hidden, intermediate);
}

/// Policy memory holding, for each expert e, gate[e] then up[e] (each `matrix` values): the stacked layout.
template <class Policy, class Weight>
typename Policy::template buffer<Weight> stack_gate_up(const Policy& policy, std::size_t experts, std::size_t matrix,
                                                       view<const Weight> gate, view<const Weight> up) {
  typename Policy::template buffer<Weight> stacked(policy, 2 * experts * matrix);
  for (std::size_t e = 0; e < experts; ++e) {
    copy_to(policy, gate.subview(e * matrix, matrix), stacked.as_view().subview(2 * e * matrix, matrix));
    copy_to(policy, up.subview(e * matrix, matrix), stacked.as_view().subview((2 * e + 1) * matrix, matrix));
  }
  synchronize(policy);  // the host arrays may die when the caller returns
  return stacked;
}

/// Makes `buffer` hold at least `size` elements (workspaces grow to the largest batch seen, never shrink).
template <class Policy, class Buffer>
void reserve(const Policy& policy, Buffer& buffer, std::size_t size) {
  if (buffer.size() < size) {
    buffer = Buffer(policy, size);
  }
}

/// y = W_down (SiLU(W_gate x) * (W_up x)) for `rows` rows of x [rows x H] (policy memory), with the stacked
/// gate_up [2I x H] and down [H x I] weights and workspaces gate_up_out [rows x 2I] and activated [rows x I].
template <class Policy, class Weight>
void swiglu_rows(const Policy& policy, std::size_t rows, std::size_t hidden, std::size_t intermediate,
                 view<const float> x, view<const Weight> gate_up, view<const Weight> down, view<float> gate_up_out,
                 view<float> activated, view<float> y) {
  gemm_nt(policy, rows, 2 * intermediate, hidden, x, gate_up, gate_up_out);
  for_each_n(policy, rows * intermediate, silu_mul_op{gate_up_out.data(), activated.data(), intermediate});
  gemm_nt(policy, rows, hidden, intermediate, view<const float>(activated.data(), activated.size()), down, y);
}

}  // namespace ngemb::detail
