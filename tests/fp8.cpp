// fp8 (E4M3) weights as the FP8 checkpoints store them: the fp8_e4m3 type against an independent table and
// PyTorch's casts, F8_E4M3 tensors through the safetensors writer and reader, and the block-scaled product against
// an fp64 product over the dequantised weights.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fp8_check.hpp"
#include "fp8_golden.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/detail/fp8_gemm_ops.hpp"
#include "ngemb/policy/fp8_gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "temp_folder.hpp"

namespace {

using ngemb_test::check_product;
using ngemb_test::fp8_nearest_code;
using ngemb_test::fp8_reference_value;
using ngemb_test::random_codes;
using ngemb_test::random_nonzero;
using ngemb_test::random_scales;

void check_gemm(const ngemb::host_policy& policy, std::size_t m, std::size_t n, std::size_t k, std::mt19937& random) {
  const auto a = random_nonzero(m * k, random);
  const auto b = random_codes(n * k, random);
  const auto scale_inv = random_scales(ngemb::fp8_scale_blocks(n) * ngemb::fp8_scale_blocks(k), random);
  std::vector<float> c(m * n, std::numeric_limits<float>::quiet_NaN());
  ngemb::gemm_nt(policy, m, n, k, a, ngemb::view<const ngemb::fp8_e4m3>(b), scale_inv, c);
  check_product(m, n, k, a, b, scale_inv, c);
}

}  // namespace

TEST_CASE("fp8_e4m3 widens every code exactly (bias 7, subnormals, 0x7f/0xff NaN)") {
  for (unsigned code = 0; code < 256; ++code) {
    const float widened = static_cast<float>(ngemb::fp8_e4m3::from_bits(static_cast<std::uint8_t>(code)));
    const double expected = fp8_reference_value(code);
    INFO("code " << code);
    if (std::isnan(expected)) {
      CHECK(std::isnan(widened));
      CHECK(std::signbit(widened) == (code >= 0x80));
    } else {
      CHECK(static_cast<double>(widened) == expected);
      CHECK(std::signbit(widened) == (code >= 0x80));  // -0 too
    }
  }
  CHECK(static_cast<float>(ngemb::fp8_e4m3::from_bits(0x7e)) == 448.0f);
  CHECK(static_cast<float>(ngemb::fp8_e4m3::from_bits(0x01)) == std::ldexp(1.0f, -9));
  CHECK(ngemb::dtype_of<ngemb::fp8_e4m3> == ngemb::dtype::f8_e4m3);
  CHECK(ngemb::name_of(ngemb::dtype::f8_e4m3) == "F8_E4M3");
  CHECK(ngemb::size_of(ngemb::dtype::f8_e4m3) == 1);
}

TEST_CASE("fp8_e4m3 narrowing: representables exact, ties to even, saturation to +-448, NaN stays NaN") {
  for (unsigned code = 0; code < 256; ++code) {
    if ((code & 0x7fu) == 0x7fu) {
      continue;
    }
    const auto value = static_cast<float>(fp8_reference_value(code));
    CHECK(ngemb::fp8_e4m3(value).bits == code);
  }
  // Midpoints between neighbours go to the even code; a hair either side goes to the nearer one.
  for (unsigned code = 0; code + 1 < 0x7f; ++code) {
    const double low = fp8_reference_value(code);
    const double high = fp8_reference_value(code + 1);
    const auto midpoint = static_cast<float>((low + high) / 2);  // exact in float
    const unsigned even = (code & 1u) == 0 ? code : code + 1;
    INFO("between codes " << code << " and " << code + 1);
    CHECK(ngemb::fp8_e4m3(midpoint).bits == even);
    CHECK(ngemb::fp8_e4m3(-midpoint).bits == (even | 0x80u));
    CHECK(ngemb::fp8_e4m3(std::nextafter(midpoint, 0.0f)).bits == code);
    CHECK(ngemb::fp8_e4m3(std::nextafter(midpoint, 1000.0f)).bits == code + 1);
  }
  for (const float large : {448.0f, 448.5f, 463.9f, 464.0f, 1e6f, std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::infinity()}) {
    CHECK(ngemb::fp8_e4m3(large).bits == 0x7e);
    CHECK(ngemb::fp8_e4m3(-large).bits == 0xfe);
  }
  CHECK(ngemb::fp8_e4m3(std::numeric_limits<float>::quiet_NaN()).bits == 0x7f);
  CHECK(ngemb::fp8_e4m3(-std::numeric_limits<float>::quiet_NaN()).bits == 0xff);
  CHECK(ngemb::fp8_e4m3(std::numeric_limits<float>::denorm_min()).bits == 0x00);
  CHECK(ngemb::fp8_e4m3(-std::numeric_limits<float>::denorm_min()).bits == 0x80);
}

TEST_CASE("fp8_e4m3 narrowing of random floats matches the nearest-code search and PyTorch's casts") {
  std::mt19937 random(15);
  std::uniform_real_distribution<float> exponent(-14.0f, 10.0f);
  std::bernoulli_distribution negative(0.5);
  std::size_t mismatches = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const float magnitude = std::exp2(exponent(random));
    const float value = negative(random) ? -magnitude : magnitude;
    if (ngemb::fp8_e4m3(value).bits != fp8_nearest_code(value) && ++mismatches <= 5) {
      INFO("value " << value);
      CHECK(false);
    }
  }
  CHECK(mismatches == 0);
  for (const auto& [bits, code] : fp8_golden::torch_casts) {
    const auto value = std::bit_cast<float>(bits);
    INFO("value " << value);
    CHECK(ngemb::fp8_e4m3(value).bits == code);
  }
}

TEST_CASE("F8_E4M3 tensors are written and read as stored; plain reads refuse to drop their scale") {
  ngemb_test::temp_folder folder;
  std::mt19937 random(3);
  const auto weights = random_codes(3 * 5, random);
  const std::vector<float> scale{0.25f};
  ngemb::tensor_collection collection;
  collection.add<ngemb::fp8_e4m3>(ngemb::host_policy{}, "w.weight", {3, 5}, weights);
  collection.add<float>(ngemb::host_policy{}, "w.weight_scale_inv", {1, 1}, scale);
  ngemb::write_safetensors(folder / "fp8.safetensors", collection.tensors());

  const ngemb::safetensors_checkpoint source(folder / "fp8.safetensors");
  CHECK(source.info("w.weight").dtype == "F8_E4M3");
  const std::vector<std::int64_t> shape{3, 5};
  const auto view = source.tensor<ngemb::fp8_e4m3>("w.weight", shape);
  CHECK(std::equal(view.begin(), view.end(), weights.begin(), weights.end()));
  CHECK(ngemb::read_tensor_as<ngemb::fp8_e4m3>(source, "w.weight", shape) == weights);
  std::vector<ngemb::fp8_e4m3> rows(5);
  ngemb::read_tensor_rows_into<ngemb::fp8_e4m3>(source, "w.weight", shape, 2, 1, std::span(rows));
  CHECK(std::equal(rows.begin(), rows.end(), weights.begin() + 10));

  CHECK_THROWS_WITH_AS(ngemb::read_tensor_as<float>(source, "w.weight", shape),
                       doctest::Contains("weight_scale_inv"), ngemb::format_error);
  const std::vector<std::int64_t> scale_shape{1, 1};
  CHECK_THROWS_WITH_AS(ngemb::read_tensor_as<ngemb::fp8_e4m3>(source, "w.weight_scale_inv", scale_shape),
                       doctest::Contains("expected F8_E4M3"), ngemb::format_error);
}

TEST_CASE("fp8 widening: the AVX2 route gives the portable route's floats for every code") {
#if NGEMB_FP8_X86
  if (!ngemb::detail::fp8_cpu_has_avx2()) {
    MESSAGE("no AVX2/FMA/F16C here: only the portable route runs");
    return;
  }
  std::vector<ngemb::fp8_e4m3> codes;
  for (unsigned code = 0; code < 256; ++code) {
    if ((code & 0x7fu) != 0x7fu) {
      codes.push_back(ngemb::fp8_e4m3::from_bits(static_cast<std::uint8_t>(code)));
    }
  }
  for (const float scale : {1.0f, 0.0123f, std::ldexp(1.0f, -120), std::ldexp(1.0f, 121), 3.0e38f}) {
    std::vector<float> portable(codes.size());
    std::vector<float> avx2(codes.size());
    ngemb::detail::fp8_widen_portable(codes.data(), codes.size(), scale, portable.data());
    ngemb::detail::fp8_widen_avx2(codes.data(), codes.size(), scale, avx2.data());
    for (std::size_t i = 0; i < codes.size(); ++i) {
      INFO("code " << static_cast<unsigned>(codes[i].bits) << " scale " << scale);
      CHECK(std::bit_cast<std::uint32_t>(avx2[i]) == std::bit_cast<std::uint32_t>(portable[i]));
      CHECK(static_cast<double>(portable[i]) ==
            static_cast<double>(static_cast<float>(fp8_reference_value(codes[i].bits) * scale)));
    }
  }
#else
  MESSAGE("not an x86 build: only the portable route exists");
#endif
}

TEST_CASE("fp8 gemm_nt matches fp64 over the dequantised weights (shapes off 128 and off 8/16, m 1..20 and 100)") {
  std::mt19937 random(7);
  const ngemb::host_policy policy{2};
  for (std::size_t m = 1; m <= 20; ++m) {
    check_gemm(policy, m, 130, 77, random);
    check_gemm(policy, m, 5, 1, random);  // k = 1
  }
  check_gemm(policy, 3, 257, 300, random);
  check_gemm(policy, 100, 257, 300, random);
  check_gemm(policy, 100, 300, 129, random);
  // Large enough for two threads in the direct path and several panels in the blocked one.
  check_gemm(ngemb::host_policy{3}, 3, 1031, 2050, random);
  check_gemm(ngemb::host_policy{2}, 17, 1031, 2050, random);
}

TEST_CASE("fp8 gemm_nt: the portable loop matches fp64 too, and empty shapes are fine") {
  std::mt19937 random(11);
  const std::size_t m = 5;
  const std::size_t n = 131;
  const std::size_t k = 259;
  const auto a = random_nonzero(m * k, random);
  const auto b = random_codes(n * k, random);
  const auto scale_inv = random_scales(ngemb::fp8_scale_blocks(n) * ngemb::fp8_scale_blocks(k), random);
  std::vector<float> c(m * n);
  ngemb::detail::fp8_direct_rows_portable(m, n, k, a.data(), b.data(), scale_inv.data(), c.data(), 0, n);
  check_product(m, n, k, a, b, scale_inv, c);

  std::vector<float> none;
  std::vector<ngemb::fp8_e4m3> no_weights;
  std::vector<float> one_scale(1);
  ngemb::gemm_nt(ngemb::host_policy{}, 0, 4, 3, none, ngemb::view<const ngemb::fp8_e4m3>(random_codes(12, random)),
                 one_scale, none);
  std::vector<float> zeros(6, 1.0f);
  std::vector<float> no_scales;
  ngemb::gemm_nt(ngemb::host_policy{}, 2, 3, 0, none, ngemb::view<const ngemb::fp8_e4m3>(no_weights), no_scales,
                 zeros);
  CHECK(std::all_of(zeros.begin(), zeros.end(), [](float value) { return value == 0.0f; }));
}

TEST_CASE("fp8 gemm_nt names the operand whose size is wrong") {
  std::vector<float> a(2 * 130);
  std::vector<ngemb::fp8_e4m3> b(3 * 130);
  std::vector<float> scale_inv(2);  // ceil(3/128) x ceil(130/128) = 1 x 2
  std::vector<float> c(2 * 3);
  const ngemb::host_policy policy{};
  ngemb::gemm_nt(policy, 2, 3, 130, a, ngemb::view<const ngemb::fp8_e4m3>(b), scale_inv, c);
  std::vector<float> short_scale(1);
  CHECK_THROWS_WITH_AS(ngemb::gemm_nt(policy, 2, 3, 130, a, ngemb::view<const ngemb::fp8_e4m3>(b), short_scale, c),
                       doctest::Contains("scale_inv must hold 1 x 2"), ngemb::shape_mismatch);
  CHECK_THROWS_WITH_AS(ngemb::gemm_nt(policy, 2, 4, 130, a, ngemb::view<const ngemb::fp8_e4m3>(b), scale_inv, c),
                       doctest::Contains("B must hold 4 x 130"), ngemb::shape_mismatch);
}
