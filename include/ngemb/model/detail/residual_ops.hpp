#pragma once
// The residual stream's element operations, shared by both policies.
#include <cstddef>

#include "ngemb/core/macros.hpp"

namespace ngemb::detail {

/// stream[i] += update[i]
struct add_residual_op {
  float* stream;
  const float* update;
  NGEMB_HD void operator()(std::size_t i) const { stream[i] += update[i]; }
};

/// stream[i] += update[i] + shortcut[i]: LongCat's last sublayer adds the MoE output with it.
struct add_two_residuals_op {
  float* stream;
  const float* update;
  const float* shortcut;
  NGEMB_HD void operator()(std::size_t i) const { stream[i] += update[i] + shortcut[i]; }
};

}  // namespace ngemb::detail
