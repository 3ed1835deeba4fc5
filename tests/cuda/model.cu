// The model layers on the device: the same fp64 reference and tolerances as tests/model.cpp (projections in cuBLAS,
// rotation, K/V store and attention in kernels), plus the device's attention outputs against the host's.
#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

#include "attention_golden.hpp"
#include "ngemb/model/attention.hpp"
#include "ngemb/model/lm_head.hpp"
#include "ngemb/model/rms_norm.hpp"
#include "ngemb/policy/device_policy.cuh"

TEST_CASE("device rms_norm matches the reference") { ngemb_test::check_rms_norm(ngemb::device_policy{}); }

TEST_CASE("device lm_head matches the reference") { ngemb_test::check_lm_head(ngemb::device_policy{}); }

TEST_CASE("device attention matches the reference and the host, with speculative rollback") {
  const ngemb::device_policy policy{};
  const ngemb::host_policy host{};
  for (const auto& c : ngemb_test::attention_cases()) {
    auto layer = ngemb::attention<ngemb::device_policy>::load(policy, ngemb_test::attention_checkpoint(), c.prefix,
                                                              c.shape<ngemb::device_policy>());
    auto host_layer =
        ngemb::attention<>::load(host, ngemb_test::attention_checkpoint(), c.prefix, c.shape<ngemb::host_policy>());
    const auto outputs = ngemb_test::run_schedule(policy, layer, c);
    ngemb_test::check_against_reference(c, outputs);
    const auto host_outputs = ngemb_test::run_schedule(host, host_layer, c);
    for (std::size_t sequence = 0; sequence < outputs.size(); ++sequence) {
      // Both run in fp32; only the summation orders of cuBLAS and Eigen differ.
      const double difference =
          ngemb_test::worst_row_error(outputs[sequence], ngemb_test::widened(host_outputs[sequence]), c.width());
      INFO(c.name << " sequence " << sequence << ": device vs host " << difference);
      CHECK(difference <= 1e-5);
    }
    CHECK(ngemb_test::run_schedule(policy, layer, c, 1) == outputs);
  }
}
