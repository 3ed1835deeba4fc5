// fp8 (E4M3) weights as the FP8 checkpoints store them: the fp8_e4m3 type against an independent table and
// PyTorch's casts, F8_E4M3 tensors through the safetensors writer and reader, the block-scaled product against an
// fp64 product over the dequantised weights, and weight_matrix<fp8_e4m3>: quantising, save/load round trips
// through a safetensors file, and typed errors for a checkpoint that does not hold what it must.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <span>
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
#include "ngemb/policy/fp8_weight.hpp"
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
#ifdef NGEMB_HOST_X86_KERNELS
  if (ngemb::detail::detect_host_isa() != ngemb::detail::host_isa::avx2_fma) {
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

TEST_CASE("fp8 gemm_nt: the portable loops match fp64 too, and empty shapes are fine") {
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
  {  // gemm_nt itself with the instruction set lowered, as on a CPU without AVX2 (both paths, two threads)
    const auto saved = ngemb::detail::host_isa_limit().exchange(ngemb::detail::host_isa::generic);
    for (const std::size_t rows : {std::size_t{1}, std::size_t{5}, std::size_t{30}}) {
      check_gemm(ngemb::host_policy{2}, rows, n, k, random);
    }
    ngemb::detail::host_isa_limit().store(saved);
  }

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

namespace {

using fp8_weight = ngemb::weight_matrix<ngemb::fp8_e4m3>;

template <class T>
std::vector<T> host_copy(ngemb::view<const T> values) {
  return std::vector<T>(values.begin(), values.end());
}

/// Random weights [rows x cols] with one all-zero 128 x 128 block (when there is a second block row) and values
/// spread over a wide range, as real weights are.
std::vector<float> random_weights(std::size_t rows, std::size_t cols, std::mt19937& random) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> weights(rows * cols);
  for (float& value : weights) {
    value = normal(random);
  }
  if (rows > ngemb::fp8_block_size) {
    for (std::size_t r = ngemb::fp8_block_size; r < std::min(rows, 2 * ngemb::fp8_block_size); ++r) {
      for (std::size_t c = 0; c < std::min(cols, ngemb::fp8_block_size); ++c) {
        weights[r * cols + c] = 0.0f;
      }
    }
  }
  return weights;
}

void write(const std::filesystem::path& path, const std::vector<ngemb::tensor_to_write>& tensors) {
  ngemb::write_safetensors(path, tensors);
}

}  // namespace

TEST_CASE("weight_matrix<fp8_e4m3> quantises per 128 x 128 block with amax / 448, as the FP8 checkpoints") {
  std::mt19937 random(21);
  const std::size_t rows = 200;
  const std::size_t cols = 300;
  const auto weights = random_weights(rows, cols, random);
  const ngemb::host_policy policy{2};
  const fp8_weight matrix(policy, static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols),
                          ngemb::view<const float>(weights));
  CHECK(matrix.rows() == 200);
  CHECK(matrix.cols() == 300);
  const auto scale_inv = host_copy(matrix.scale_inv());
  const auto values = host_copy(matrix.values());
  REQUIRE(scale_inv.size() == 2 * 3);
  CHECK(matrix.bytes() == rows * cols + 6 * sizeof(float));
  for (std::size_t block = 0; block < 6; ++block) {
    const std::size_t row_begin = block / 3 * 128;
    const std::size_t col_begin = block % 3 * 128;
    float amax = 0.0f;
    for (std::size_t r = row_begin; r < std::min(rows, row_begin + 128); ++r) {
      for (std::size_t c = col_begin; c < std::min(cols, col_begin + 128); ++c) {
        amax = std::max(amax, std::fabs(weights[r * cols + c]));
      }
    }
    INFO("block " << block);
    CHECK(scale_inv[block] == (amax > 0.0f ? amax / 448.0f : 1.0f));
  }
  CHECK(scale_inv[3] == 1.0f);  // the all-zero block
  std::size_t wrong = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < cols; ++c) {
      const float scale = scale_inv[r / 128 * 3 + c / 128];
      wrong += values[r * cols + c].bits != fp8_nearest_code(weights[r * cols + c] / scale);
    }
  }
  CHECK(wrong == 0);

  // multiply is the block-scaled product of what it holds.
  for (const std::size_t m : {std::size_t{1}, std::size_t{7}, std::size_t{40}}) {
    const auto a = random_nonzero(m * cols, random);
    std::vector<float> c(m * rows);
    matrix.multiply(policy, m, a, c);
    check_product(m, rows, cols, a, values, scale_inv, c);
  }
  // A block of columns, its edges inside scale blocks.
  const std::size_t m = 3;
  const auto a = random_nonzero(m * 150, random);
  std::vector<float> c(m * rows);
  matrix.multiply_columns(policy, m, 100, 150, a, c);
  std::vector<ngemb::fp8_e4m3> block_values;
  for (std::size_t r = 0; r < rows; ++r) {
    block_values.insert(block_values.end(), values.begin() + static_cast<std::ptrdiff_t>(r * cols + 100),
                        values.begin() + static_cast<std::ptrdiff_t>(r * cols + 250));
  }
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t r = 0; r < rows; ++r) {
      double reference = 0.0;
      double magnitude = 0.0;
      for (std::size_t l = 0; l < 150; ++l) {
        const double weight =
            fp8_reference_value(block_values[r * 150 + l].bits) * scale_inv[r / 128 * 3 + (100 + l) / 128];
        reference += a[i * 150 + l] * weight;
        magnitude += std::fabs(a[i * 150 + l] * weight);
      }
      CHECK(std::fabs(c[i * rows + r] - reference) <= 152 * std::ldexp(1.0, -23) * magnitude);
    }
  }
  CHECK_THROWS_AS(matrix.multiply_columns(policy, m, 200, 150, a, c), ngemb::invalid_argument);
}

TEST_CASE("weight_matrix<fp8_e4m3> saves F8_E4M3 + F32 weight_scale_inv and loads them back, or quantises floats") {
  ngemb_test::temp_folder folder;
  std::mt19937 random(5);
  const ngemb::host_policy policy{};
  const auto weights = random_weights(130, 129, random);
  const fp8_weight matrix(policy, 130, 129, ngemb::view<const float>(weights));
  ngemb::tensor_collection collection;
  matrix.save(policy, "layer.down_proj.weight", collection);
  std::vector<ngemb::bf16> as_bf16;
  for (const float value : weights) {
    as_bf16.push_back(ngemb::bf16(value));
  }
  collection.add<ngemb::bf16>(policy, "plain.weight", {130, 129}, as_bf16);
  write(folder / "model.safetensors", std::vector<ngemb::tensor_to_write>(collection.tensors().begin(),
                                                                            collection.tensors().end()));

  const ngemb::safetensors_checkpoint source(folder / "model.safetensors");
  CHECK(source.info("layer.down_proj.weight").dtype == "F8_E4M3");
  CHECK(source.info("layer.down_proj.weight_scale_inv").dtype == "F32");
  CHECK(source.info("layer.down_proj.weight_scale_inv").shape == std::vector<std::int64_t>{2, 2});
  const auto loaded = fp8_weight::load(policy, source, "layer.down_proj.weight", 130, 129);
  CHECK(host_copy(loaded.values()) == host_copy(matrix.values()));
  CHECK(host_copy(loaded.scale_inv()) == host_copy(matrix.scale_inv()));

  // A bf16 tensor is quantised on load, as the converting constructor quantises its values.
  const auto quantised = fp8_weight::load(policy, source, "plain.weight", 130, 129);
  const fp8_weight from_bf16(policy, 130, 129, ngemb::view<const ngemb::bf16>(as_bf16));
  CHECK(host_copy(quantised.values()) == host_copy(from_bf16.values()));
  CHECK(host_copy(quantised.scale_inv()) == host_copy(from_bf16.scale_inv()));

  // From the stored fp8 values and scales directly.
  const auto values = host_copy(matrix.values());
  const auto scale_inv = host_copy(matrix.scale_inv());
  const fp8_weight direct(policy, 130, 129, ngemb::view<const ngemb::fp8_e4m3>(values),
                          ngemb::view<const float>(scale_inv));
  CHECK(host_copy(direct.values()) == values);
  CHECK(fp8_weight().rows() == 0);
}

TEST_CASE("weight_matrix<fp8_e4m3> refuses a missing, misshapen or mistyped scale, NaN codes and bad counts") {
  ngemb_test::temp_folder folder;
  std::mt19937 random(9);
  const ngemb::host_policy policy{};
  auto codes = random_codes(3 * 200, random);
  const std::vector<float> scales{0.5f, 0.25f};  // [1, 2] for 3 x 200
  const std::vector<float> wrong_scales{0.5f, 0.25f, 1.0f};
  const std::vector<std::int32_t> integer_scales{1, 2};
  const auto fp8_tensor = [&](const std::string& name, const std::vector<ngemb::fp8_e4m3>& values) {
    return ngemb::tensor_to_write::of<ngemb::fp8_e4m3>(name, {3, 200}, values);
  };
  write(folder / "bad.safetensors",
        {fp8_tensor("missing.weight", codes), fp8_tensor("shape.weight", codes),
         ngemb::tensor_to_write::of<float>("shape.weight_scale_inv", {1, 3}, wrong_scales),
         fp8_tensor("dtype.weight", codes),
         ngemb::tensor_to_write{"dtype.weight_scale_inv", "I32", {1, 2}, std::as_bytes(std::span(integer_scales))},
         fp8_tensor("good.weight", codes), ngemb::tensor_to_write::of<float>("good.weight_scale_inv", {1, 2}, scales)});
  const ngemb::safetensors_checkpoint source(folder / "bad.safetensors");
  CHECK(host_copy(fp8_weight::load(policy, source, "good.weight", 3, 200).values()) == codes);
  CHECK_THROWS_WITH_AS(fp8_weight::load(policy, source, "missing.weight", 3, 200),
                       doctest::Contains("scale tensor \"missing.weight_scale_inv\" is missing"), ngemb::format_error);
  CHECK_THROWS_WITH_AS(fp8_weight::load(policy, source, "shape.weight", 3, 200),
                       doctest::Contains("has shape [1, 3], expected [1, 2]"), ngemb::format_error);
  CHECK_THROWS_WITH_AS(fp8_weight::load(policy, source, "dtype.weight", 3, 200),
                       doctest::Contains("has dtype I32, expected F32, BF16 or F16"), ngemb::format_error);
  CHECK_THROWS_WITH_AS(fp8_weight::load(policy, source, "good.weight", 3, 199),
                       doctest::Contains("has shape [3, 200], expected [3, 199]"), ngemb::format_error);

  codes[17] = ngemb::fp8_e4m3::from_bits(0xff);
  write(folder / "nan.safetensors",
        {fp8_tensor("w.weight", codes), ngemb::tensor_to_write::of<float>("w.weight_scale_inv", {1, 2}, scales)});
  CHECK_THROWS_WITH_AS(fp8_weight::load(policy, ngemb::safetensors_checkpoint(folder / "nan.safetensors"), "w.weight",
                                        3, 200),
                       doctest::Contains("value 17 is the fp8 NaN code 255"), ngemb::format_error);
  CHECK_THROWS_AS(
      fp8_weight(policy, 3, 200, ngemb::view<const ngemb::fp8_e4m3>(codes), ngemb::view<const float>(scales)),
      ngemb::invalid_argument);
  codes[17] = ngemb::fp8_e4m3::from_bits(0x01);
  CHECK_THROWS_WITH_AS(fp8_weight(policy, 3, 200, ngemb::view<const ngemb::fp8_e4m3>(codes),
                                  ngemb::view<const float>(wrong_scales)),
                       doctest::Contains("must hold 1 x 2 values, got 3"), ngemb::shape_mismatch);
  const std::vector<float> infinite_scale{0.5f, std::numeric_limits<float>::infinity()};
  CHECK_THROWS_AS(fp8_weight(policy, 3, 200, ngemb::view<const ngemb::fp8_e4m3>(codes),
                             ngemb::view<const float>(infinite_scale)),
                  ngemb::invalid_argument);
  std::vector<float> floats(3 * 200, 1.0f);
  CHECK_THROWS_AS(fp8_weight(policy, 3, 199, ngemb::view<const float>(floats)), ngemb::shape_mismatch);
  floats[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(fp8_weight(policy, 3, 200, ngemb::view<const float>(floats)),
                       doctest::Contains("value 5 is not finite"), ngemb::invalid_argument);
}
