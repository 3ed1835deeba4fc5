// Must not compile: weight_matrix<fp8_e4m3> without ngemb/policy/fp8_weight.hpp. The primary template would hold
// fp8 values without their block scales; it must fail naming the header that holds them.
#include "ngemb/policy/weight_matrix.hpp"

int main() {
  const ngemb::weight_matrix<ngemb::fp8_e4m3> weight;
  return static_cast<int>(weight.rows());
}
