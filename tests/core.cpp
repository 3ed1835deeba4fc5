// core/: dtypes (exact round-to-nearest-even against independent references), ragged views, config validation.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "ngemb/core/config.hpp"
#include "ngemb/core/dtype.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/version.hpp"

namespace {

// Independent decoders: the textbook formulas, evaluated in double.
double fp16_value(std::uint16_t bits) {
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  if (exponent == 0x1f) {
    return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  }
  if (exponent == 0) {
    return sign * std::ldexp(mantissa, -24);
  }
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

double bf16_value(std::uint16_t bits) {
  const int exponent = (bits >> 7) & 0xff;
  const int mantissa = bits & 0x7f;
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  if (exponent == 0xff) {
    return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  }
  if (exponent == 0) {
    return sign * std::ldexp(mantissa, -133);
  }
  return sign * std::ldexp(128 + mantissa, exponent - 134);
}

// Round-to-nearest-even by search: the two representable neighbours of |x|, compared exactly in double.
// `largest_finite` is the bit pattern of the largest finite value; beyond it the format overflows to infinity.
template <class Decode>
std::uint16_t nearest_even(float x, Decode decode, std::uint16_t largest_finite, std::uint16_t infinity) {
  const double magnitude = std::fabs(static_cast<double>(x));
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  std::uint16_t low = 0;
  std::uint16_t high = largest_finite;
  if (magnitude >= decode(largest_finite)) {
    // Past the largest finite value the next step would be one ulp further: its midpoint decides overflow.
    const double step = decode(largest_finite) - decode(static_cast<std::uint16_t>(largest_finite - 1));
    const double midpoint = decode(largest_finite) + step / 2;
    if (magnitude > midpoint || (magnitude == midpoint && (largest_finite & 1))) {
      return sign | infinity;
    }
    return sign | largest_finite;
  }
  while (high - low > 1) {  // decode(low) <= magnitude < decode(high)
    const auto middle = static_cast<std::uint16_t>((low + high) / 2);
    (decode(middle) <= magnitude ? low : high) = middle;
  }
  const double below = magnitude - decode(low);
  const double above = decode(high) - magnitude;
  if (below < above || (below == above && (low & 1) == 0)) {
    return sign | low;
  }
  return sign | high;
}

std::vector<float> conversion_inputs(double (*decode)(std::uint16_t), std::uint16_t largest_finite) {
  std::vector<float> inputs;
  // Every midpoint between neighbours (the ties) and the floats just beside them, plus random floats.
  for (std::uint16_t bits = 0; bits < largest_finite; ++bits) {
    const auto midpoint = static_cast<float>((decode(bits) + decode(static_cast<std::uint16_t>(bits + 1))) / 2);
    for (float value : {midpoint, std::nextafter(midpoint, 0.0f), std::nextafter(midpoint, 1e30f),
                        static_cast<float>(decode(bits))}) {
      inputs.push_back(value);
      inputs.push_back(-value);
    }
  }
  std::mt19937 random(7);
  for (int i = 0; i < 200000; ++i) {
    inputs.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(random())));
  }
  for (float special : {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 65536.0f, 1e-8f, 2.9802322e-08f, 3e-38f,
                        3.3961514e38f, 3.4028235e38f, std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::denorm_min()}) {
    inputs.push_back(special);
    inputs.push_back(-special);
  }
  return inputs;
}

}  // namespace

TEST_CASE("fp16 decodes every bit pattern exactly and round-trips it") {
  for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto half = ngemb::fp16::from_bits(static_cast<std::uint16_t>(bits));
    const double expected = fp16_value(half.bits);
    const float decoded = static_cast<float>(half);
    if (std::isnan(expected)) {
      CHECK(std::isnan(decoded));
      CHECK(std::isnan(static_cast<float>(ngemb::fp16(decoded))));
      continue;
    }
    CHECK(static_cast<double>(decoded) == expected);
    CHECK(ngemb::fp16(decoded).bits == half.bits);
  }
}

TEST_CASE("bf16 decodes every bit pattern exactly and round-trips it") {
  for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto brain = ngemb::bf16::from_bits(static_cast<std::uint16_t>(bits));
    const double expected = bf16_value(brain.bits);
    const float decoded = static_cast<float>(brain);
    if (std::isnan(expected)) {
      CHECK(std::isnan(decoded));
      CHECK(std::isnan(static_cast<float>(ngemb::bf16(decoded))));
      continue;
    }
    CHECK(static_cast<double>(decoded) == expected);
    CHECK(ngemb::bf16(decoded).bits == brain.bits);
  }
}

TEST_CASE("float to fp16 rounds to nearest even, with subnormals and overflow") {
  std::size_t mismatches = 0;
  for (float value : conversion_inputs(fp16_value, 0x7bff)) {
    if (std::isnan(value)) {
      continue;
    }
    const std::uint16_t expected = nearest_even(value, fp16_value, 0x7bff, 0x7c00);
    if (ngemb::fp16(value).bits != expected) {
      if (++mismatches < 10) {
        INFO("value " << value << " expected bits " << expected << " got " << ngemb::fp16(value).bits);
        CHECK(false);
      }
    }
  }
  CHECK(mismatches == 0);
#if defined(__FLT16_MAX__)
  std::mt19937 random(11);  // and against the compiler's own _Float16 conversion
  for (int i = 0; i < 1000000; ++i) {
    const float value = std::bit_cast<float>(static_cast<std::uint32_t>(random()));
    if (!std::isnan(value)) {
      REQUIRE(ngemb::fp16(value).bits == std::bit_cast<std::uint16_t>(static_cast<_Float16>(value)));
    }
  }
#endif
}

TEST_CASE("float to bf16 rounds to nearest even") {
  std::size_t mismatches = 0;
  for (float value : conversion_inputs(bf16_value, 0x7f7f)) {
    if (std::isnan(value)) {
      continue;
    }
    const std::uint16_t expected = nearest_even(value, bf16_value, 0x7f7f, 0x7f80);
    if (ngemb::bf16(value).bits != expected) {
      if (++mismatches < 10) {
        INFO("value " << value << " expected bits " << expected << " got " << ngemb::bf16(value).bits);
        CHECK(false);
      }
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("NaN stays NaN and keeps its sign") {
  const float negative_nan = -std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(static_cast<float>(ngemb::bf16(negative_nan))));
  CHECK(std::signbit(static_cast<float>(ngemb::bf16(negative_nan))));
  CHECK(std::isnan(static_cast<float>(ngemb::fp16(std::numeric_limits<float>::signaling_NaN()))));
  CHECK(ngemb::dtype_of<ngemb::bf16> == ngemb::dtype::bf16);
  CHECK(ngemb::name_of(ngemb::dtype_of<float>) == "F32");
  CHECK(ngemb::size_of(ngemb::dtype::f16) == 2);
}

TEST_CASE("ragged_view finds the sequence of every value, empty sequences included") {
  const std::vector<int> values(9);
  const std::vector<std::int64_t> offsets{0, 3, 3, 3, 7, 9, 9};
  const ngemb::ragged_view<const int> batch(values, offsets);
  CHECK(batch.num_sequences() == 6);
  const std::vector<std::size_t> expected{0, 0, 0, 3, 3, 3, 3, 4, 4};
  for (std::size_t i = 0; i < values.size(); ++i) {
    CHECK(batch.sequence_of(static_cast<std::int64_t>(i)) == expected[i]);
  }
  CHECK(batch.size_of(1) == 0);
  CHECK(batch.sequence(3).size() == 4);
}

TEST_CASE("ngram_config: LongCat-Flash-Lite sizes and moduli") {
  const auto lite = ngemb::ngram_config::longcat_flash_lite();
  lite.validate();
  CHECK(lite.num_tables() == 12);
  CHECK(lite.row_width() == 256);
  CHECK(lite.modulus(0) == 10223617);
  CHECK(lite.modulus(11) == 10223617 + 22);
  CHECK(lite.order_of(0) == 2);
  CHECK(lite.order_of(11) == 4);
  auto with_base = lite;
  with_base.ratio.reset();
  with_base.m_base = 78 * 131072;
  CHECK(with_base.moduli() == lite.moduli());
  auto fractional = lite;
  fractional.vocab_size = 1000;
  fractional.ratio = 5.5;
  CHECK(fractional.modulus(1) == 5503);  // int(5.5*1000 + 2 + 1)
}

TEST_CASE("ngram_config: invalid values are named") {
  const auto lite = ngemb::ngram_config::longcat_flash_lite();
  const auto fails_with = [](ngemb::ngram_config config, const char* needle) {
    try {
      config.validate();
      FAIL("no exception for " << needle);
    } catch (const ngemb::invalid_argument& failure) {
      INFO(failure.what());
      CHECK(std::string(failure.what()).find(needle) != std::string::npos);
    }
  };
  auto config = lite;
  config.max_order = 1;
  fails_with(config, "emb_neighbor_num (N) must be in [2, 64], got 1");
  config = lite;
  config.splits = 0;
  fails_with(config, "emb_split_num (K) must be in [1, 4096], got 0");
  config = lite;
  config.hidden_size = 11;
  fails_with(config, "hidden_size (H) must be >= K*(N-1) = 12");
  config = lite;
  config.ratio = 40000.0;
  fails_with(config, "overflows 32-bit row ids");
  config = lite;
  config.ratio.reset();
  config.m_base = (std::int64_t{1} << 32) - 20;
  fails_with(config, "modulus of sub-table 10 is 4294967297");
  config = lite;
  config.m_base = 5;
  fails_with(config, "exactly one of");
  config = lite;
  config.ratio.reset();
  fails_with(config, "exactly one of");
  config = lite;
  config.eos_token = 131072;
  fails_with(config, "eos_token_id = 131072 is outside [0, vocab_size = 131072)");
  config = lite;
  config.ignored_tokens = {4, -1};
  fails_with(config, "ignored_tokens[1] = -1");
  config = lite;
  config.vocab_size = 0;
  fails_with(config, "vocab_size must be in [1, 2^31]");
  config = lite;
  config.ratio = std::nan("");
  fails_with(config, "finite and > 0");
}

// ---------------------------------------------------------------------------------------------------------------
// Hardening (issue 9): sizes from files and arguments are checked before anything is computed or allocated.

#include <string>

#include "ngemb/core/checked.hpp"
#include "ngemb/policy/host_policy.hpp"

TEST_CASE("checked arithmetic names what overflowed") {
  CHECK(ngemb::checked_mul<std::size_t>(1 << 20, 1 << 20, "x") == std::size_t{1} << 40);
  CHECK_THROWS_WITH_AS((void)ngemb::checked_mul<std::size_t>(std::size_t{1} << 40, std::size_t{1} << 40, "table rows"),
                       doctest::Contains("table rows: 1099511627776 * 1099511627776 overflows a 64-bit integer"),
                       ngemb::invalid_argument);
  CHECK_THROWS_AS((void)ngemb::checked_add<std::int64_t>(INT64_MAX, 1, "sum"), ngemb::invalid_argument);
  CHECK(ngemb::checked_product("kv", 2, std::size_t{3}, std::int64_t{4}) == 24);
  CHECK_THROWS_WITH_AS((void)ngemb::checked_product("kv", 4096, std::int64_t{1} << 24, 4096, 16384, 4),
                       doctest::Contains("kv: "), ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS((void)ngemb::checked_product("kv", 2, -3), doctest::Contains("kv = -3 is outside"),
                       ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS((void)ngemb::checked_cast<std::int32_t>(std::int64_t{4294967302}, "n_routed_experts"),
                       "n_routed_experts = 4294967302 is outside [-2147483648, 2147483647]", ngemb::invalid_argument);
  CHECK_THROWS_AS((void)ngemb::checked_cast<std::int64_t>(std::uint64_t{1} << 63, "u"), ngemb::invalid_argument);
}

TEST_CASE("host_buffer: byte counts that overflow are refused, memory that is not there is out_of_memory") {
  const ngemb::host_policy policy;
  // Before the fix, (2^62 + 1) * 4 wrapped to 4 bytes and the buffer claimed 2^62 + 1 elements.
  CHECK_THROWS_WITH_AS(ngemb::host_buffer<float>(policy, (std::size_t{1} << 62) + 1),
                       doctest::Contains("host_buffer: 4611686018427387905 * 4 overflows"), ngemb::invalid_argument);
  // The 2 MiB round-up of a byte count near SIZE_MAX wrapped to 0.
  CHECK_THROWS_AS(ngemb::host_buffer<std::uint8_t>(policy, SIZE_MAX - 5), ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(ngemb::host_buffer<float>(policy, std::size_t{1} << 60),
                       doctest::Contains("host_buffer: cannot allocate 4611686018427387904 bytes"),
                       ngemb::out_of_memory);
}

TEST_CASE("ngram_config: sizes are bounded before any arithmetic uses them") {
  auto config = ngemb::ngram_config::longcat_flash_lite();
  config.hidden_size = 1317624576693539401;
  CHECK_THROWS_WITH_AS(config.validate(), doctest::Contains("hidden_size (H) 1317624576693539401 is larger than 2^20"),
                       ngemb::invalid_argument);
  config = ngemb::ngram_config::longcat_flash_lite();
  config.ratio.reset();
  config.m_base = INT64_MAX;  // modulus() added 2i + 1 to this before the range check: signed overflow
  CHECK_THROWS_WITH_AS(config.validate(), doctest::Contains("m_base must be in [0, 2^32)"), ngemb::invalid_argument);
  config = ngemb::ngram_config::longcat_flash_lite();
  config.splits = INT32_MAX;
  CHECK_THROWS_WITH_AS(config.validate(), doctest::Contains("emb_split_num (K) must be in [1, 4096]"),
                       ngemb::invalid_argument);
  config = ngemb::ngram_config::longcat_flash_lite();
  config.splits = 4096;
  config.max_order = 64;
  CHECK_THROWS_WITH_AS(config.validate(), doctest::Contains("K*(N-1) = 258048 sub-tables"), ngemb::invalid_argument);
}

TEST_CASE("ngemb/version.hpp is generated from project(VERSION)") {
  CHECK(std::string(NGEMB_VERSION_STRING) == NGEMB_PROJECT_VERSION);
  CHECK(std::to_string(NGEMB_VERSION_MAJOR) + "." + std::to_string(NGEMB_VERSION_MINOR) + "." +
            std::to_string(NGEMB_VERSION_PATCH) ==
        NGEMB_PROJECT_VERSION);
  CHECK(NGEMB_VERSION == NGEMB_VERSION_MAJOR * 10000 + NGEMB_VERSION_MINOR * 100 + NGEMB_VERSION_PATCH);
}
