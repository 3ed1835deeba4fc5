// Whole models on the device: the same PyTorch reference checks as tests/causal_lm.cpp (model_golden.hpp), with
// every part in device memory, and save from the device reloaded on the host giving the same logits; the sampling
// stream (Philox4x32-10, core/philox.hpp) gives the same bits in a kernel as on the host.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "model_golden.hpp"
#include "pending_property.hpp"
#include "ngemb/core/philox.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/presets/longcat.hpp"
#include "temp_folder.hpp"

namespace {

// The reference models hold fp32 weights throughout.
template <class Policy>
using shortcut_lm = typename ngemb::presets::longcat_shortcut<Policy, float>::model;
template <class Policy>
using prenorm_lm = typename ngemb::presets::longcat_prenorm<Policy, float>::model;

const ngemb::device_policy device{};

/// Element i: token_stream{seed, i / 8, i % 8}'s block and uniform, as generate draws them on the host.
struct philox_op {
  std::uint64_t seed;
  std::uint32_t* bits;  // 4 words per element
  double* uniforms;
  NGEMB_HD void operator()(std::size_t i) const {
    const ngemb::token_stream stream{seed, i / 8, static_cast<std::uint32_t>(i % 8)};
    const ngemb::philox4x32_block block = stream.bits();
    for (int w = 0; w < 4; ++w) {
      bits[4 * i + static_cast<std::size_t>(w)] = block.word[w];
    }
    uniforms[i] = stream.uniform();
  }
};

}  // namespace

TEST_CASE("device: Philox4x32-10 token streams give the host's bits and uniforms") {
  constexpr std::size_t n = 4096;
  for (const std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{0x0123456789abcdefull}}) {
    CAPTURE(seed);
    ngemb::device_buffer<std::uint32_t> bits(device, 4 * n);
    ngemb::device_buffer<double> uniforms(device, n);
    ngemb::for_each_n(device, n, philox_op{seed, bits.data(), uniforms.data()});
    const auto device_bits = ngemb_test::to_host(device, ngemb::view<const std::uint32_t>(bits.as_view()));
    const auto device_uniforms = ngemb_test::to_host(device, ngemb::view<const double>(uniforms.as_view()));
    std::vector<std::uint32_t> host_bits(4 * n);
    std::vector<double> host_uniforms(n);
    const philox_op host_op{seed, host_bits.data(), host_uniforms.data()};
    for (std::size_t i = 0; i < n; ++i) {
      host_op(i);
    }
    CHECK(device_bits == host_bits);
    CHECK(device_uniforms == host_uniforms);  // bit-exact: 53 bits times 2^-53 rounds nowhere
    if (seed == 0) {  // Random123's first philox4x32 10 known answer (counter and key zero), from the kernel
      CHECK(device_bits[0] == 0x6627e8d5u);
      CHECK(device_bits[1] == 0xe169c58du);
      CHECK(device_bits[2] == 0xbc57ac4cu);
      CHECK(device_bits[3] == 0x9b00dbd8u);
    }
  }
}

TEST_CASE("device: LongCat shortcut-block model matches the PyTorch reference") {
  ngemb_test::check_against_reference<shortcut_lm<ngemb::device_policy>>(device, "shortcut");
}

TEST_CASE("device: pre-norm MoE model matches the PyTorch reference") {
  ngemb_test::check_against_reference<prenorm_lm<ngemb::device_policy>>(device, "prenorm");
}

TEST_CASE("device: a model saved from device memory loads on the host with the same logits") {
  const ngemb_test::model_golden expected("shortcut");
  auto on_device = shortcut_lm<ngemb::device_policy>::load(device, ngemb_test::model_dir / "shortcut");
  const ngemb_test::temp_folder folder;
  on_device.save(device, folder.path());
  const ngemb::host_policy host;
  auto on_host = shortcut_lm<ngemb::host_policy>::load(host, folder.path());
  const auto every = ngemb::logits_for::every_token;
  const auto device_logits = ngemb_test::run_batch(on_device, device, expected.sequences,
                                                   ngemb_test::start(on_device, 3), every);
  const auto host_logits = ngemb_test::run_batch(on_host, host, expected.sequences, ngemb_test::start(on_host, 3), every);
  REQUIRE(device_logits.size() == host_logits.size());
  for (std::size_t i = 0; i < host_logits.size(); ++i) {
    CHECK(device_logits[i] == doctest::Approx(host_logits[i]).epsilon(1e-4));
  }
}

TEST_CASE("device: speculative steps leave the caches as plain decoding of the accepted tokens (GQA, n-gram)") {
  for (const unsigned seed : {1u, 2u}) {
    ngemb_test::check_pending_matches_plain<shortcut_lm<ngemb::device_policy>>(
        device, ngemb_test::model_dir / "shortcut", seed, 1e-4);
  }
}

TEST_CASE("device: speculative steps leave the caches as plain decoding of the accepted tokens (MLA latent cache)") {
  ngemb_test::check_pending_matches_plain<ngemb::presets::longcat_flash_lite<ngemb::device_policy>::model>(
      device, std::filesystem::path(NGEMB_MODELS_DIR) / "tiny-longcat", 4u, 1e-4);
}
