// The model layers on the device: the same fp64 reference and tolerances as tests/model.cpp (projections in cuBLAS,
// rotation, K/V store and attention in kernels), plus the device's attention outputs against the host's.
// MLA (issue 11) at the end.
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

// MLA on the device: the transformers goldens in both forms and with a bf16 latent cache, the forms against each
// other over mixed ragged steps, the device against the host, and speculative rollback (tolerances in
// mla_golden.hpp; device and host differ only in cuBLAS's and Eigen's summation orders).
#include "mla_golden.hpp"
#include "ngemb/model/mla_attention.hpp"

TEST_CASE("device mla_attention matches transformers and the host, in both forms, with rollback") {
  const ngemb::device_policy policy{};
  const ngemb::host_policy host{};
  for (const auto& c : ngemb_test::mla_cases()) {
    auto layer = ngemb_test::load_mla(policy, c);
    auto host_layer = ngemb_test::load_mla(host, c);
    const auto host_outputs = ngemb_test::run_mla_schedule(host, host_layer, c.steps, c.inputs);
    for (const ngemb::mla_form form : {ngemb::mla_form::absorbed, ngemb::mla_form::expanded}) {
      INFO(c.name << " form " << static_cast<int>(form));
      layer.set_form(form);
      const auto outputs = ngemb_test::run_mla_schedule(policy, layer, c.steps, c.inputs);
      ngemb_test::check_mla_against_reference(c, outputs);
      CHECK(ngemb_test::relative_difference(outputs, host_outputs) <= ngemb_test::form_tolerance);
      CHECK(ngemb_test::run_mla_schedule(policy, layer, c.steps, c.inputs, 1) == outputs);
    }
    auto bf16_layer = ngemb_test::load_mla<ngemb::device_policy, ngemb::bf16>(policy, c);
    ngemb_test::check_mla_against_reference(c, ngemb_test::run_mla_schedule(policy, bf16_layer, c.steps, c.inputs),
                                            ngemb_test::bf16_tolerance);
  }
}

TEST_CASE("device mla: the absorbed and the expanded form agree within 1e-5 over mixed ragged steps") {
  const ngemb::device_policy policy{};
  for (const int q_lora_rank : {16, 0}) {
    const ngemb::mla_shape shape = ngemb_test::random_form_shape(q_lora_rank);
    const ngemb_test::random_mla_weights weights(shape, 11u + static_cast<unsigned>(q_lora_rank));
    const auto inputs = ngemb_test::random_inputs(ngemb_test::mixed_lengths(), shape.hidden, 5);
    ngemb::mla_attention<ngemb::device_policy> layer(policy, shape, weights.views);
    layer.set_form(ngemb::mla_form::absorbed);
    const auto absorbed = ngemb_test::run_mla_schedule(policy, layer, ngemb_test::mixed_steps(), inputs);
    layer.set_form(ngemb::mla_form::expanded);
    const auto expanded = ngemb_test::run_mla_schedule(policy, layer, ngemb_test::mixed_steps(), inputs);
    INFO("q_lora_rank " << q_lora_rank);
    CHECK(ngemb_test::relative_difference(absorbed, expanded) <= ngemb_test::form_tolerance);
  }
}
