// hash/: LongCat ids bit-exact against the independent Python reference (tests/reference), against a literal
// in-test transcription of SPEC §2 on random configs, and the errors bad input must raise.
#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ngemb/hash/detail/barrett.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "token_batch.hpp"

namespace {

using batch = ngemb_test::token_batch;

ngemb::ngram_config config_from_case(const nlohmann::json& entry) {
  ngemb::ngram_config config;
  config.vocab_size = entry.at("vocab_size").get<std::int64_t>();
  config.hidden_size = entry.at("hidden_size").get<std::int64_t>();
  config.max_order = entry.at("n").get<int>();
  config.splits = entry.at("k").get<int>();
  if (!entry.at("ratio").is_null()) {
    config.ratio = entry.at("ratio").get<double>();
  }
  if (!entry.at("m_base").is_null()) {
    config.m_base = entry.at("m_base").get<std::int64_t>();
  }
  if (!entry.at("eos").is_null()) {
    config.eos_token = entry.at("eos").get<std::int64_t>();
  }
  config.ignored_tokens = entry.at("ignored").get<std::vector<std::int64_t>>();
  return config;
}

// SPEC §2 transcribed literally: weights by repeated multiply-mod, one 64-bit sum, one final mod.
std::vector<std::uint64_t> spec_ids(const ngemb::ngram_config& config, const std::vector<std::int32_t>& stream,
                                    std::size_t position) {
  std::vector<std::uint64_t> ids;
  const auto is_boundary = [&](std::int64_t token) {
    return (config.eos_token && token == *config.eos_token) ||
           std::find(config.ignored_tokens.begin(), config.ignored_tokens.end(), token) !=
               config.ignored_tokens.end();
  };
  const bool ignored = std::find(config.ignored_tokens.begin(), config.ignored_tokens.end(), stream[position]) !=
                       config.ignored_tokens.end();
  for (int n = 2; n <= config.max_order; ++n) {
    for (int k = 0; k < config.splits; ++k) {
      const auto modulus = static_cast<std::uint64_t>(config.modulus((n - 2) * config.splits + k));
      std::uint64_t sum = static_cast<std::uint64_t>(stream[position]);
      std::uint64_t weight = 1;
      bool cut = false;
      for (int j = 1; j <= n - 1; ++j) {
        weight = weight * static_cast<std::uint64_t>(config.vocab_size) % modulus;
        const bool before_start = position < static_cast<std::size_t>(j);
        cut = cut || before_start || is_boundary(stream[position - static_cast<std::size_t>(j)]);
        if (!cut) {
          sum += static_cast<std::uint64_t>(stream[position - static_cast<std::size_t>(j)]) * weight % modulus;
        }
      }
      ids.push_back(ignored ? 0 : sum % modulus);
    }
  }
  return ids;
}

template <class Id>
std::vector<Id> run_hash(const ngemb::longcat_hash& hasher, const batch& input, bool with_context,
                         ngemb::id_layout layout = ngemb::id_layout::per_table, unsigned threads = 1) {
  std::vector<Id> ids(input.tokens.size() * static_cast<std::size_t>(hasher.num_tables()), Id(12345));
  const ngemb::host_policy policy{threads, 64};
  if (with_context) {
    ngemb::hash_tokens(policy, hasher, input.token_view(), input.context_view(), ngemb::view<Id>(ids), layout);
  } else {
    ngemb::hash_tokens(policy, hasher, input.token_view(), ngemb::view<Id>(ids), layout);
  }
  return ids;
}

}  // namespace

TEST_CASE("barrett reduction equals the hardware remainder") {
  std::mt19937_64 random(3);
  std::vector<std::uint32_t> moduli{1, 2, 3, 7, 10223617, 4294967295u, 4294967291u, 2147483648u};
  for (int i = 0; i < 200; ++i) {
    moduli.push_back(static_cast<std::uint32_t>(random() | 1));
  }
  for (std::uint32_t modulus : moduli) {
    const ngemb::detail::barrett_modulus barrett(modulus);
    for (int i = 0; i < 2000; ++i) {
      const std::uint64_t x = i < 1000 ? random() : random() >> (i % 64);
      REQUIRE(barrett.reduce(x) == x % modulus);
    }
    for (const std::uint64_t x : std::vector<std::uint64_t>{0, ~std::uint64_t{0}, std::uint64_t{modulus} - 1, std::uint64_t{modulus},
                            std::uint64_t{modulus} * 4294967295u, std::uint64_t{modulus} * 4294967295u - 1}) {
      REQUIRE(barrett.reduce(x) == x % modulus);
    }
  }
}

TEST_CASE("golden ids from the independent Python reference") {
  std::ifstream file(std::string(NGEMB_REFERENCE_DIR) + "/longcat_hash_golden.json");
  REQUIRE(file.good());
  const auto golden = nlohmann::json::parse(file);
  std::size_t checked_rows = 0;
  for (const auto& entry : golden.at("cases")) {
    const std::string name = entry.at("name").get<std::string>();
    CAPTURE(name);
    const auto config = config_from_case(entry);
    const ngemb::longcat_hash hasher(config);
    const auto moduli = entry.at("moduli").get<std::vector<std::int64_t>>();
    for (int table = 0; table < hasher.num_tables(); ++table) {
      CHECK(hasher.rows(table) == moduli[static_cast<std::size_t>(table)]);
    }
    batch input;
    std::vector<std::int64_t> expected;
    for (const auto& sequence : entry.at("sequences")) {
      input.add(sequence.at("tokens").get<std::vector<std::int32_t>>(),
                sequence.at("context").get<std::vector<std::int32_t>>());
      for (const auto& row : sequence.at("ids")) {
        for (const auto& id : row) {
          expected.push_back(id.get<std::int64_t>());
        }
        ++checked_rows;
      }
    }
    const auto ids64 = run_hash<std::int64_t>(hasher, input, true);
    CHECK(ids64 == expected);
    const auto ids32 = run_hash<std::uint32_t>(hasher, input, true, ngemb::id_layout::per_table, 3);
    CHECK(std::vector<std::int64_t>(ids32.begin(), ids32.end()) == expected);
    // Concatenated layout: the same ids shifted by each table's first row.
    const auto shifted = run_hash<std::int64_t>(hasher, input, true, ngemb::id_layout::concatenated);
    for (std::size_t i = 0; i < shifted.size(); ++i) {
      const int table = static_cast<int>(i % static_cast<std::size_t>(hasher.num_tables()));
      REQUIRE(shifted[i] == expected[i] + hasher.row_offset(table));
    }
  }
  CHECK(checked_rows > 3000);
}

TEST_CASE("random configs agree with a literal transcription of SPEC §2") {
  std::mt19937 random(17);
  for (int trial = 0; trial < 60; ++trial) {
    ngemb::ngram_config config;
    config.vocab_size = std::uniform_int_distribution<std::int64_t>(2, trial % 3 == 0 ? 2000000 : 300)(random);
    config.max_order = std::uniform_int_distribution<int>(2, 8)(random);
    config.splits = std::uniform_int_distribution<int>(1, 64 / (config.max_order - 1))(random);
    config.hidden_size = config.num_tables() * 8;
    if (trial % 2 == 0) {
      config.ratio = std::uniform_real_distribution<double>(0.3, 200.0)(random);
      if (*config.ratio * static_cast<double>(config.vocab_size) > 4e9) {
        config.ratio = 3.25;
      }
    } else {
      config.m_base = std::uniform_int_distribution<std::int64_t>(0, 4000000000)(random);
    }
    if (trial % 4 != 3) {
      config.eos_token = std::uniform_int_distribution<std::int64_t>(0, config.vocab_size - 1)(random);
    }
    if (trial % 5 == 0) {
      config.ignored_tokens = {0, config.vocab_size - 1};
    }
    CAPTURE(trial);
    const ngemb::longcat_hash hasher(config);
    batch input;
    std::vector<std::vector<std::int32_t>> streams;
    std::uniform_int_distribution<std::int32_t> token(0, static_cast<std::int32_t>(config.vocab_size - 1));
    std::uniform_int_distribution<std::int32_t> small(0, 3);
    for (int sequence = 0; sequence < 12; ++sequence) {
      std::vector<std::int32_t> stream(std::uniform_int_distribution<std::size_t>(0, 30)(random));
      for (auto& value : stream) {  // dense in special tokens so boundaries land everywhere
        const int pick = small(random);
        value = pick == 0 ? static_cast<std::int32_t>(config.eos_token.value_or(0))
                : pick == 1 ? static_cast<std::int32_t>(config.vocab_size - 1)
                            : token(random);
      }
      const std::size_t split = stream.empty() ? 0 : std::uniform_int_distribution<std::size_t>(0, stream.size())(random);
      input.add({stream.begin() + static_cast<std::ptrdiff_t>(split), stream.end()},
                {stream.begin(), stream.begin() + static_cast<std::ptrdiff_t>(split)});
      streams.push_back(stream);
    }
    const auto ids = run_hash<std::int64_t>(hasher, input, true);
    std::size_t row = 0;
    for (std::size_t sequence = 0; sequence < streams.size(); ++sequence) {
      const auto& stream = streams[sequence];
      const std::size_t first = stream.size() - static_cast<std::size_t>(input.offsets[sequence + 1] - input.offsets[sequence]);
      for (std::size_t position = first; position < stream.size(); ++position, ++row) {
        const auto expected = spec_ids(config, stream, position);
        for (std::size_t table = 0; table < expected.size(); ++table) {
          REQUIRE(static_cast<std::uint64_t>(ids[row * expected.size() + table]) == expected[table]);
        }
      }
    }
  }
}

TEST_CASE("sums that could overflow 64 bits are reduced term by term, with the same ids") {
  ngemb::ngram_config config;
  config.vocab_size = std::int64_t{1} << 31;
  config.hidden_size = 64;
  config.max_order = 4;
  config.splits = 2;
  config.m_base = 4249006920;  // table 4 (order 4) has weights near 2^32: large tokens overflow a plain sum
  config.eos_token = 9;
  const ngemb::longcat_hash hasher(config);
  CHECK(hasher.ref().reduce_each_term);
  CHECK_FALSE(ngemb::longcat_hash(ngemb::ngram_config::longcat_flash_lite()).ref().reduce_each_term);
  std::mt19937 random(5);
  std::uniform_int_distribution<std::int32_t> large(INT32_MAX - (1 << 27), INT32_MAX);
  std::vector<std::int32_t> stream(400);
  for (auto& value : stream) {
    value = random() % 9 == 0 ? 9 : large(random);
  }
  batch input;
  input.add(stream);
  const auto ids = run_hash<std::int64_t>(hasher, input, false);
  for (std::size_t position = 0; position < stream.size(); ++position) {
    const auto expected = spec_ids(config, stream, position);
    for (std::size_t table = 0; table < expected.size(); ++table) {
      REQUIRE(static_cast<std::uint64_t>(ids[position * expected.size() + table]) == expected[table]);
    }
  }
}

TEST_CASE("bad input raises typed errors naming the value and the place") {
  const ngemb::longcat_hash hasher(ngemb::ngram_config::longcat_flash_lite());
  const ngemb::host_policy policy;
  batch input;
  input.add({5, 6, 7});
  input.add({8, 131072, 9}, {1, 2});
  std::vector<std::int64_t> ids(input.tokens.size() * 12);
  CHECK_THROWS_WITH_AS(
      ngemb::hash_tokens(policy, hasher, input.token_view(), ngemb::view<std::int64_t>(ids)),
      "hash_tokens: tokens: token id 131072 at sequence 1, position 1 (flat index 4) is outside [0, 131072)",
      ngemb::invalid_argument);
  try {
    ngemb::hash_tokens(policy, hasher, input.token_view(), ngemb::view<std::int64_t>(ids));
    FAIL("no token_out_of_range");
  } catch (const ngemb::token_out_of_range& failure) {  // the place, for callers mapping it to their input
    CHECK(failure.sequence() == 1);
    CHECK(failure.position() == 1);
    CHECK(failure.value() == 131072);
  }
  input.tokens[4] = 4;
  input.context[1] = -7;
  CHECK_THROWS_WITH_AS(ngemb::hash_tokens(policy, hasher, input.token_view(), input.context_view(),
                                          ngemb::view<std::int64_t>(ids)),
                       "hash_tokens: context: token id -7 at sequence 1, position 1 (flat index 1) is outside [0, "
                       "131072)",
                       ngemb::invalid_argument);
  input.context[1] = 3;
  std::vector<std::int64_t> too_few(ids.size() - 1);
  CHECK_THROWS_AS(ngemb::hash_tokens(policy, hasher, input.token_view(), ngemb::view<std::int64_t>(too_few)),
                  ngemb::shape_mismatch);
  const std::vector<std::int64_t> bad_offsets{0, 4, 3, 6};
  CHECK_THROWS_WITH_AS(ngemb::hash_tokens(policy, hasher, ngemb::ragged_view<const std::int32_t>(input.tokens, bad_offsets),
                                          ngemb::view<std::int64_t>(ids)),
                       "hash_tokens: tokens: offsets[2] = 3 is less than offsets[1] = 4", ngemb::shape_mismatch);
  batch one_context;
  one_context.add({1}, {2});
  CHECK_THROWS_AS(ngemb::hash_tokens(policy, hasher, input.token_view(), one_context.context_view(),
                                     ngemb::view<std::int64_t>(ids)),
                  ngemb::shape_mismatch);
  // Ids of a concatenated table larger than 2^32 rows need 64-bit ids.
  auto wide = ngemb::ngram_config::longcat_flash_lite();
  wide.ratio = 30000.0;
  wide.vocab_size = 131072;
  const ngemb::longcat_hash wide_hasher(wide);
  std::vector<std::uint32_t> ids32(ids.size());
  CHECK_THROWS_AS(ngemb::hash_tokens(policy, wide_hasher, input.token_view(), ngemb::view<std::uint32_t>(ids32),
                                     ngemb::id_layout::concatenated),
                  ngemb::invalid_argument);
  auto huge = ngemb::ngram_config::longcat_flash_lite();
  huge.max_order = 9;
  CHECK_THROWS_AS(ngemb::longcat_hash{huge}, ngemb::invalid_argument);
}

TEST_CASE("deferred checks: garbage offsets and tokens never cause an out-of-bounds access, and raise later") {
  const ngemb::longcat_hash hasher(ngemb::ngram_config::longcat_flash_lite());
  const ngemb::host_policy policy;
  std::mt19937 random(23);
  std::vector<std::int32_t> tokens(40);
  for (auto& token : tokens) {
    token = static_cast<std::int32_t>(random() % 131072);
  }
  std::vector<std::int64_t> ids(tokens.size() * 12);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<std::int64_t> offsets(2 + random() % 6);
    for (auto& offset : offsets) {
      offset = static_cast<std::int64_t>(random() % 200) - 60;
    }
    offsets.back() = static_cast<std::int64_t>(tokens.size()) + 1;  // always inconsistent
    std::vector<std::int64_t> context_offsets(offsets.size());
    for (auto& offset : context_offsets) {
      offset = static_cast<std::int64_t>(random() % 200) - 60;
    }
    const ngemb::ragged_view<const std::int32_t> batch(tokens, offsets);
    const ngemb::ragged_view<const std::int32_t> context(tokens, context_offsets);
    ngemb::input_checks<ngemb::host_policy> deferred(policy);
    ngemb::hash_tokens_async(policy, hasher, batch, context, ngemb::view<std::int64_t>(ids),
                             ngemb::id_layout::per_table, deferred);
    CHECK_THROWS_AS(deferred.raise_if_failed(), ngemb::shape_mismatch);
  }
  const std::vector<std::int64_t> no_sequence{0};  // what sizes alone show is raised at once, even deferred
  ngemb::input_checks<ngemb::host_policy> early(policy);
  CHECK_THROWS_WITH_AS(ngemb::hash_tokens_async(policy, hasher,
                                                ngemb::ragged_view<const std::int32_t>(tokens, no_sequence),
                                                ngemb::view<std::int64_t>(ids), ngemb::id_layout::per_table, early),
                       "hash_tokens: tokens: offsets describe no sequence but there are 40 values",
                       ngemb::shape_mismatch);
  const std::vector<std::int64_t> offsets{0, 40};
  tokens[17] = 131072 + 5;
  ngemb::input_checks<ngemb::host_policy> deferred(policy);
  ngemb::hash_tokens_async(policy, hasher, ngemb::ragged_view<const std::int32_t>(tokens, offsets),
                           ngemb::view<std::int64_t>(ids), ngemb::id_layout::per_table, deferred);
  CHECK_THROWS_WITH_AS(deferred.raise_if_failed(),
                       "hash_tokens: tokens: token id 131077 at sequence 0, position 17 (flat index 17) is outside "
                       "[0, 131072)",
                       ngemb::invalid_argument);
  tokens[17] = 5;  // valid input: deferred checks pass and the ids equal the checked call's
  ngemb::input_checks<ngemb::host_policy> passing(policy);
  ngemb::hash_tokens_async(policy, hasher, ngemb::ragged_view<const std::int32_t>(tokens, offsets),
                           ngemb::view<std::int64_t>(ids), ngemb::id_layout::per_table, passing);
  passing.raise_if_failed();
  std::vector<std::int64_t> checked(ids.size());
  ngemb::hash_tokens(policy, hasher, ngemb::ragged_view<const std::int32_t>(tokens, offsets),
                     ngemb::view<std::int64_t>(checked));
  CHECK(checked == ids);
}

TEST_CASE("deferred checks: offsets at the ends of int64 cause no signed overflow (issue 9)") {
  const ngemb::longcat_hash hasher(ngemb::ngram_config::longcat_flash_lite());
  const ngemb::host_policy policy;
  const std::vector<std::int32_t> tokens{5, 6};
  std::vector<std::int64_t> ids(tokens.size() * 12);
  for (const std::vector<std::int64_t>& offsets : std::vector<std::vector<std::int64_t>>{
           {INT64_MIN, 1}, {0, INT64_MAX}, {INT64_MAX, INT64_MIN}, {0, INT64_MIN, 2}, {0, 1, INT64_MAX}}) {
    CAPTURE(offsets.size());
    const ngemb::ragged_view<const std::int32_t> batch(tokens, offsets);
    ngemb::input_checks<ngemb::host_policy> deferred(policy);
    ngemb::hash_tokens_async(policy, hasher, batch, batch, ngemb::view<std::int64_t>(ids),
                             ngemb::id_layout::per_table, deferred);
    CHECK_THROWS_AS(deferred.raise_if_failed(), ngemb::shape_mismatch);
  }
}
