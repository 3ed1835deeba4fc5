#pragma once
// LongCat-Flash's zero-computation experts (SPEC §6): identity experts a token may be routed to instead of an FFN,
// so easy tokens spend less compute. A pick of one contributes weight * x and costs no GEMM.
#include "ngemb/core/macros.hpp"

namespace ngemb {

/// The identity expert: the contribution of a zero-expert pick with router weight `weight` to an output element
/// whose input element is `input`. moe<Router, Weight, ZeroExperts> calls it element by element, on host and device.
struct zero_experts {
  NGEMB_HD float operator()(float weight, float input) const { return weight * input; }
};

}  // namespace ngemb
