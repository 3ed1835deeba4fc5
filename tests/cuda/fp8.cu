// The block-scaled fp8 product on the device (cuda/fp8_gemm.cuh and the dequantise + cuBLAS path) against fp64
// over the dequantised weights, with the tolerance of tests/fp8.cpp, and against the host product on the same
// operands; weight_matrix<fp8_e4m3, device_policy> holds what the host one holds, multiplies alike, and saves and
// loads through a safetensors file.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include "embedding_golden.hpp"
#include "fp8_check.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/policy/fp8_gemm.hpp"
#include "ngemb/policy/fp8_weight.hpp"
#include "temp_folder.hpp"

TEST_CASE("device fp8 gemm_nt matches fp64 over the dequantised weights: warp kernel and dequantise + cuBLAS") {
  const ngemb::device_policy policy{};
  // m <= 8: the warp kernel, vectorised (k % 16 == 0) or not; m > 8: dequantised weights and cuBLAS.
  for (const auto& [m, n, k] : {std::array<std::size_t, 3>{1, 300, 272}, {8, 257, 129}, {3, 33, 16}, {5, 130, 77},
                                {2, 7, 1}, {9, 64, 500}, {20, 130, 77}, {100, 257, 300}, {4, 5, 0}}) {
    std::mt19937 random(static_cast<unsigned>(m * 7919 + n * 31 + k));
    const auto a = ngemb_test::random_nonzero(m * k, random);
    const auto b = ngemb_test::random_codes(n * k, random);
    const auto scale_inv =
        ngemb_test::random_scales(ngemb::fp8_scale_blocks(n) * ngemb::fp8_scale_blocks(k), random);
    const auto device_a = ngemb_test::to_policy(policy, a);
    const auto device_b = ngemb_test::to_policy(policy, b);
    const auto device_scale = ngemb_test::to_policy(policy, scale_inv);
    auto device_c = ngemb_test::to_policy(policy, std::vector<float>(m * n, -7.0f));
    ngemb::gemm_nt(policy, m, n, k, device_a.as_view(), ngemb::view<const ngemb::fp8_e4m3>(device_b.as_view()),
                   device_scale.as_view(), device_c.as_view());
    const auto c = ngemb_test::to_host(policy, ngemb::view<const float>(device_c.as_view()));
    INFO("m = " << m << ", n = " << n << ", k = " << k);
    ngemb_test::check_product(m, n, k, a, b, scale_inv, c);
    std::vector<float> host(m * n);
    ngemb::gemm_nt(ngemb::host_policy{}, m, n, k, a, ngemb::view<const ngemb::fp8_e4m3>(b), scale_inv, host);
    ngemb_test::check_product(m, n, k, a, b, scale_inv, host);
  }
}

TEST_CASE("device fp8 gemm_nt names the operand whose size is wrong before launching") {
  const ngemb::device_policy policy{};
  ngemb::device_buffer<float> a(policy, 2 * 130);
  ngemb::device_buffer<ngemb::fp8_e4m3> b(policy, 3 * 130);
  ngemb::device_buffer<float> scale_inv(policy, 1);
  ngemb::device_buffer<float> c(policy, 2 * 3);
  CHECK_THROWS_WITH_AS(ngemb::gemm_nt(policy, 2, 3, 130, a.as_view(), ngemb::view<const ngemb::fp8_e4m3>(b.as_view()),
                                      scale_inv.as_view(), c.as_view()),
                       doctest::Contains("scale_inv must hold 1 x 2"), ngemb::shape_mismatch);
}

TEST_CASE("device weight_matrix<fp8_e4m3>: the host's quantised values, its products, and a save/load round trip") {
  const ngemb::device_policy policy{};
  const ngemb::host_policy host{};
  std::mt19937 random(13);
  const std::size_t rows = 200;
  const std::size_t cols = 300;
  const auto weights = ngemb_test::random_nonzero(rows * cols, random);
  const ngemb::weight_matrix<ngemb::fp8_e4m3, ngemb::device_policy> matrix(policy, 200, 300,
                                                                         ngemb::view<const float>(weights));
  const ngemb::weight_matrix<ngemb::fp8_e4m3> on_host(host, 200, 300, ngemb::view<const float>(weights));
  const auto values = ngemb_test::to_host(policy, matrix.values());
  const auto scale_inv = ngemb_test::to_host(policy, matrix.scale_inv());
  CHECK(values == std::vector<ngemb::fp8_e4m3>(on_host.values().begin(), on_host.values().end()));
  CHECK(scale_inv == std::vector<float>(on_host.scale_inv().begin(), on_host.scale_inv().end()));
  for (const std::size_t m : {std::size_t{1}, std::size_t{8}, std::size_t{33}}) {
    const auto a = ngemb_test::random_nonzero(m * cols, random);
    const auto device_a = ngemb_test::to_policy(policy, a);
    auto device_c = ngemb_test::to_policy(policy, std::vector<float>(m * rows, -7.0f));
    matrix.multiply(policy, m, device_a.as_view(), device_c.as_view());
    INFO("m = " << m);
    ngemb_test::check_product(m, rows, cols, a, values, scale_inv,
                              ngemb_test::to_host(policy, ngemb::view<const float>(device_c.as_view())));
  }
  const ngemb_test::temp_folder folder;
  ngemb::tensor_collection collection;
  matrix.save(policy, "w.weight", collection);
  ngemb::write_safetensors(folder / "w.safetensors", collection.tensors());
  const auto loaded = ngemb::weight_matrix<ngemb::fp8_e4m3, ngemb::device_policy>::load(
      policy, ngemb::safetensors_checkpoint(folder / "w.safetensors"), "w.weight", 200, 300);
  CHECK(ngemb_test::to_host(policy, loaded.values()) == values);
  CHECK(ngemb_test::to_host(policy, loaded.scale_inv()) == scale_inv);
}
