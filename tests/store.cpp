// store/: table_store and mmap_store hand out the same rows for the same tables, from host arrays or a checkpoint
// written with the library's writer, and name the tensor that is missing or misshapen. host_resident_store on the
// host is the mmap store, and its hot-row cache answers every lookup with the bytes the tables hold. A store of row
// ranges (a rank's shard) holds and maps just those rows.
#include <doctest/doctest.h>
#include <unistd.h>  // sysconf

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/store/host_resident_store.hpp"
#include "ngemb/store/mmap_store.hpp"
#include "ngemb/store/table_store.hpp"
#include "resident_store_check.hpp"
#include "sharded_store_check.hpp"
#include "mapping_cost.hpp"
#include "temp_folder.hpp"

namespace {

ngemb::ngram_config small_config() {
  ngemb::ngram_config config;
  config.vocab_size = 19;
  config.hidden_size = 13;  // T = 6 tables of d = 2 (13 = 6*2 + 1: the remainder is not part of any row)
  config.max_order = 3;
  config.splits = 3;
  config.m_base = 23;
  return config;
}

/// Random tables for `config` plus their tensors, written as a two-shard checkpoint in a fresh folder.
struct written_tables {
  std::filesystem::path folder;
  std::vector<ngemb::bf16> base;
  std::vector<std::vector<ngemb::bf16>> tables;

  explicit written_tables(const ngemb::ngram_config& config, const std::string& name)
      : folder(std::filesystem::temp_directory_path() / ("ngemb_store_" + name + std::to_string(std::random_device{}()))) {
    std::mt19937 random(7);
    std::normal_distribution<float> normal;
    for (std::int64_t i = 0; i < config.vocab_size * config.hidden_size; ++i) {
      base.emplace_back(normal(random));
    }
    std::vector<ngemb::tensor_to_write> tensors;
    tensors.push_back(ngemb::tensor_to_write::of("model.embed_tokens.weight", {config.vocab_size, config.hidden_size},
                                                 ngemb::view<const ngemb::bf16>(base)));
    for (int table = 0; table < config.num_tables(); ++table) {
      tables.emplace_back();
      for (std::int64_t i = 0; i < config.modulus(table) * config.row_width(); ++i) {
        tables.back().emplace_back(normal(random));
      }
    }
    for (int table = 0; table < config.num_tables(); ++table) {
      tensors.push_back(ngemb::tensor_to_write::of(ngemb::ngram_names::embedder("model.ngram_embeddings", table),
                                                   {config.modulus(table), config.row_width()},
                                                   ngemb::view<const ngemb::bf16>(tables[static_cast<std::size_t>(table)])));
    }
    std::filesystem::create_directories(folder);
    ngemb::write_safetensors_checkpoint(folder, tensors, 600);
  }
  ~written_tables() { std::filesystem::remove_all(folder); }
  written_tables(const written_tables&) = delete;
  written_tables& operator=(const written_tables&) = delete;
};

template <class Store>
void check_rows(const Store& store, const written_tables& written, const ngemb::ngram_config& config) {
  const auto rows = store.ref();
  REQUIRE(store.num_tables() == config.num_tables());
  CHECK(store.has_base());
  for (int table = 0; table < config.num_tables(); ++table) {
    CHECK(store.rows(table) == config.modulus(table));
    for (std::int64_t row = 0; row < config.modulus(table); ++row) {
      for (std::int64_t column = 0; column < config.row_width(); ++column) {
        const auto want = written.tables[static_cast<std::size_t>(table)][static_cast<std::size_t>(row * config.row_width() + column)];
        CHECK(ngemb::to_float(rows.row(table, static_cast<std::uint64_t>(row))[column]) == ngemb::to_float(want));
      }
    }
  }
  for (std::int64_t token = 0; token < config.vocab_size; ++token) {
    for (std::int64_t column = 0; column < config.hidden_size; ++column) {
      CHECK(ngemb::to_float(rows.base_row(static_cast<std::uint64_t>(token))[column]) ==
            ngemb::to_float(written.base[static_cast<std::size_t>(token * config.hidden_size + column)]));
    }
  }
}

}  // namespace

TEST_CASE("table_store and mmap_store serve the written rows") {
  const auto config = small_config();
  const written_tables written(config, "rows");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder);
  const ngemb::host_policy policy;

  check_rows(ngemb::mmap_store<ngemb::bf16>(checkpoint, "model", config), written, config);
  check_rows(ngemb::table_store<ngemb::bf16>::load(policy, *checkpoint, "model", config), written, config);

  std::vector<ngemb::view<const ngemb::bf16>> views(written.tables.begin(), written.tables.end());
  const ngemb::table_store<ngemb::bf16> from_arrays(policy, config, ngemb::view<const ngemb::bf16>(written.base), views);
  check_rows(from_arrays, written, config);
  CHECK(from_arrays.bytes() == (written.base.size() + [&] {
          std::size_t total = 0;
          for (const auto& table : written.tables) {
            total += table.size();
          }
          return total;
        }()) * sizeof(ngemb::bf16));

  // Widening on load is exact.
  const auto widened = ngemb::table_store<float>::load(policy, *checkpoint, "model", config);
  CHECK(widened.ref().row(5, 22)[1] == ngemb::to_float(written.tables[5][22 * 2 + 1]));
}

TEST_CASE("store errors name the tensor and the mismatch") {
  const auto config = small_config();
  const written_tables written(config, "errors");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder);
  const ngemb::host_policy policy;

  SUBCASE("moduli that disagree with the file") {
    auto other = config;
    other.m_base = 25;
    CHECK_THROWS_WITH_AS(ngemb::mmap_store<ngemb::bf16>(checkpoint, "model", other),
                         doctest::Contains("embedders.0.weight\" has shape [24, 2], expected [26, 2]"), ngemb::format_error);
    CHECK_THROWS_WITH_AS(ngemb::table_store<float>::load(policy, *checkpoint, "model", other),
                         doctest::Contains("embedders.0.weight\" has shape [24, 2], expected [26, 2]"), ngemb::format_error);
  }
  SUBCASE("a dtype mmap cannot serve without converting") {
    CHECK_THROWS_WITH_AS(ngemb::mmap_store<float>(checkpoint, "model", config),
                         doctest::Contains("has dtype BF16, expected F32"),
                         ngemb::format_error);
  }
  SUBCASE("a missing tensor") {
    CHECK_THROWS_WITH_AS(ngemb::mmap_store<ngemb::bf16>(checkpoint, "other", config),
                         doctest::Contains("other.ngram_embeddings.embedders.0.weight"), ngemb::format_error);
    CHECK_THROWS_WITH_AS(ngemb::table_store<ngemb::bf16>::load(policy, *checkpoint, "other", config),
                         doctest::Contains("other.ngram_embeddings.embedders.0.weight"), ngemb::format_error);
  }
  SUBCASE("host arrays of the wrong size") {
    std::vector<ngemb::view<const ngemb::bf16>> views(written.tables.begin(), written.tables.end());
    std::vector<ngemb::bf16> short_table(written.tables[3].begin(), written.tables[3].end() - 1);
    views[3] = ngemb::view<const ngemb::bf16>(short_table);
    CHECK_THROWS_WITH_AS(ngemb::table_store<ngemb::bf16>(policy, config, ngemb::view<const ngemb::bf16>(written.base), views),
                         doctest::Contains("sub-table 3 has 59 elements, expected 60"), ngemb::shape_mismatch);
    views.pop_back();
    CHECK_THROWS_WITH_AS(ngemb::table_store<ngemb::bf16>(policy, config, ngemb::view<const ngemb::bf16>(written.base), views),
                         doctest::Contains("5 sub-tables given"), ngemb::shape_mismatch);
  }
}

TEST_CASE("stores save under the names they load, and read a base table only where the checkpoint has one") {
  const auto config = small_config();
  const written_tables written(config, "names");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder);
  const ngemb::host_policy policy;
  const auto names_of = [](const ngemb::tensor_collection& tensors) {
    std::vector<std::string> names;
    for (const auto& tensor : tensors.entries()) {
      names.push_back(tensor.name);
    }
    return names;
  };
  std::vector<std::string> expected{"layer.embed_tokens.weight"};
  for (int table = 0; table < config.num_tables(); ++table) {
    expected.push_back("layer.ngram_embeddings.embedders." + std::to_string(table) + ".weight");
  }
  ngemb::tensor_collection from_mmap;
  ngemb::mmap_store<ngemb::bf16>::load(policy, checkpoint, "model", config).save(policy, "layer", from_mmap);
  CHECK(names_of(from_mmap) == expected);
  ngemb::tensor_collection from_table;
  ngemb::table_store<ngemb::bf16>::load(policy, checkpoint, "model", config).save(policy, "layer", from_table);
  CHECK(names_of(from_table) == expected);

  // Without "{prefix}.embed_tokens.weight" (a per-layer embedding's tables) the stores have no base table.
  const ngemb_test::temp_folder without_base;
  ngemb::write_safetensors_checkpoint(without_base.path(), from_table.tensors().subspan(1), 1 << 20);
  const auto per_layer = std::make_shared<const ngemb::safetensors_checkpoint>(without_base.path());
  const auto table = ngemb::table_store<ngemb::bf16>::load(policy, per_layer, "layer", config);
  const auto mapped = ngemb::mmap_store<ngemb::bf16>::load(policy, per_layer, "layer", config);
  CHECK_FALSE(table.has_base());
  CHECK_FALSE(mapped.has_base());
  CHECK(ngemb::to_float(mapped.ref().row(5, 22)[1]) == ngemb::to_float(written.tables[5][22 * 2 + 1]));
  CHECK(ngemb::to_float(table.ref().row(5, 22)[1]) == ngemb::to_float(written.tables[5][22 * 2 + 1]));
}

namespace {

using resident_bf16 = ngemb::host_resident_store<ngemb::bf16>;
using row_key = std::pair<int, std::uint32_t>;  // (sub-table, row)

std::size_t total_rows(const ngemb::ngram_config& config) {
  std::size_t total = 0;
  for (int table = 0; table < config.num_tables(); ++table) {
    total += static_cast<std::size_t>(config.modulus(table));
  }
  return total;
}

/// [tokens x T] ids in the per-table layout, skewed so rows differ in frequency: a geometric rank scattered over the
/// rows (11 is coprime to every modulus of small_config).
std::vector<std::uint32_t> skewed_ids(const ngemb::ngram_config& config, std::size_t tokens, unsigned seed) {
  std::mt19937 random(seed);
  std::geometric_distribution<std::uint32_t> rank(0.1);
  std::vector<std::uint32_t> ids;
  for (std::size_t token = 0; token < tokens; ++token) {
    for (int table = 0; table < config.num_tables(); ++table) {
      ids.push_back((rank(random) * 11u + static_cast<std::uint32_t>(table)) %
                    static_cast<std::uint32_t>(config.modulus(table)));
    }
  }
  return ids;
}

/// What cache_rows keeps: the `capacity` most frequent rows of `ids`, ties to the smaller (sub-table, row).
std::set<row_key> hottest(const std::vector<std::uint32_t>& ids, int tables, std::size_t capacity) {
  std::map<row_key, std::size_t> counts;
  for (std::size_t position = 0; position < ids.size(); ++position) {
    ++counts[{static_cast<int>(position % static_cast<std::size_t>(tables)), ids[position]}];
  }
  std::vector<std::pair<row_key, std::size_t>> ranked(counts.begin(), counts.end());
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& left, const auto& right) { return left.second > right.second; });
  std::set<row_key> kept;
  for (std::size_t index = 0; index < std::min(capacity, ranked.size()); ++index) {
    kept.insert(ranked[index].first);
  }
  return kept;
}

/// Every row of every sub-table through the store's ref: the tables' bytes; a row of `cached` points into the
/// cache, any other row at the mapped table row itself.
void check_lookups(const resident_bf16& store, const std::set<row_key>& cached) {
  const auto rows = store.ref();
  const auto tables = store.tables().ref();
  const auto width = static_cast<std::size_t>(store.row_width());
  REQUIRE(store.cached_rows() == cached.size());
  CHECK((rows.cache_slots == nullptr) == cached.empty());
  const auto in_cache = [&](const ngemb::bf16* row) {
    return rows.cache_rows != nullptr && row >= rows.cache_rows && row < rows.cache_rows + cached.size() * width;
  };
  for (int table = 0; table < store.num_tables(); ++table) {
    for (std::uint32_t id = 0; id < static_cast<std::uint32_t>(store.rows(table)); ++id) {
      CAPTURE(table);
      CAPTURE(id);
      const ngemb::bf16* got = rows.row(table, id);
      const ngemb::bf16* want = tables.row(table, id);
      CHECK(std::memcmp(got, want, width * sizeof(ngemb::bf16)) == 0);
      const bool expect_cached = cached.count({table, id}) != 0;
      CHECK(in_cache(got) == expect_cached);
      if (!expect_cached) {
        CHECK(got == want);
      }
    }
  }
}

}  // namespace

TEST_CASE("host_resident_store: on the host it is the mmap store, reading the checkpoint in place") {
  const auto config = small_config();
  const written_tables written(config, "resident");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder);
  const ngemb::host_policy policy;
  const auto resident = resident_bf16::load(policy, checkpoint, "model", config);
  const ngemb::mmap_store<ngemb::bf16> mapped(checkpoint, "model", config);
  check_rows(resident, written, config);
  CHECK(resident.cached_rows() == 0);
  const auto rows = resident.ref();
  CHECK(rows.cache_slots == nullptr);
  for (int table = 0; table < config.num_tables(); ++table) {
    for (std::uint64_t id = 0; id < static_cast<std::uint64_t>(config.modulus(table)); ++id) {
      CHECK(rows.row(table, id) == mapped.ref().row(table, id));
    }
  }
  CHECK(rows.base == mapped.ref().base);
}

TEST_CASE("host_resident_store: the hot-row cache serves the tables' bytes and holds the most frequent rows") {
  const auto config = small_config();
  const written_tables written(config, "cache");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder);
  const ngemb::host_policy policy;
  const std::size_t total = total_rows(config);
  const std::vector<std::uint32_t> ids = skewed_ids(config, 300, 11);
  const ngemb::view<const std::uint32_t> id_view(ids);

  SUBCASE("random ids, caches from none to every row") {
    for (const std::size_t capacity : {std::size_t{0}, std::size_t{1}, std::size_t{17}, std::size_t{60}, total}) {
      CAPTURE(capacity);
      auto store = resident_bf16::load(policy, checkpoint, "model", config, {.cached_rows = capacity});
      store.cache_rows(policy, id_view);
      check_lookups(store, hottest(ids, config.num_tables(), capacity));
    }
  }
  SUBCASE("a full cache: every row cached, some away from their home slot") {
    std::vector<std::uint32_t> every_row;
    for (std::int64_t token = 0; token < config.modulus(config.num_tables() - 1); ++token) {
      for (int table = 0; table < config.num_tables(); ++table) {
        every_row.push_back(static_cast<std::uint32_t>(token % config.modulus(table)));
      }
    }
    auto store = resident_bf16::load(policy, checkpoint, "model", config, {.cached_rows = total});
    store.cache_rows(policy, ngemb::view<const std::uint32_t>(every_row));
    std::set<row_key> all;
    for (int table = 0; table < config.num_tables(); ++table) {
      for (std::uint32_t id = 0; id < static_cast<std::uint32_t>(config.modulus(table)); ++id) {
        all.insert({table, id});
      }
    }
    check_lookups(store, all);
    const auto rows = store.ref();
    std::size_t displaced = 0;
    for (std::uint64_t slot = 0; slot <= rows.cache_mask; ++slot) {
      const ngemb::row_cache_slot entry = rows.cache_slots[slot];
      displaced += entry.key != ngemb::row_cache_slot::empty &&
                   ngemb::detail::row_cache_home(entry.key, rows.cache_mask) != slot;
    }
    CHECK(displaced > 0);  // collisions were resolved by probing, and check_lookups found every row
  }
  SUBCASE("an empty batch leaves the cache empty, and a new batch replaces the cached rows") {
    auto store = resident_bf16::load(policy, checkpoint, "model", config, {.cached_rows = 20});
    store.cache_rows(policy, ngemb::view<const std::uint32_t>());
    check_lookups(store, {});
    store.cache_rows(policy, id_view);
    check_lookups(store, hottest(ids, config.num_tables(), 20));
    const std::vector<std::uint32_t> other = skewed_ids(config, 50, 12);
    store.cache_rows(policy, ngemb::view<const std::uint32_t>(other));
    check_lookups(store, hottest(other, config.num_tables(), 20));
  }
}

TEST_CASE("host_resident_store: probing stops at its bound, and colliding keys are all found") {
  // Keys of sub-table 1 that share home slot 3 of a 16-slot table: 8 fit within the probe bound, a 9th does not.
  std::vector<std::uint64_t> colliding;
  for (std::uint64_t id = 0; colliding.size() < 9; ++id) {
    const std::uint64_t key = ngemb::detail::row_cache_key(1, id);
    if (ngemb::detail::row_cache_home(key, 15) == 3) {
      colliding.push_back(key);
    }
  }
  std::vector<ngemb::row_cache_slot> slots;
  CHECK_FALSE(ngemb::detail::place_row_keys(colliding, 16, slots));
  const std::uint64_t left_out = colliding.back() & 0xffffffffu;
  colliding.pop_back();
  REQUIRE(ngemb::detail::place_row_keys(colliding, 16, slots));

  // Sub-table 1 has rows of 2 values (row r holds r, r); the cache's row i holds -(i + 1).
  const std::size_t table_rows = left_out + 1;
  std::vector<float> table(table_rows * 2);
  for (std::size_t index = 0; index < table.size(); ++index) {
    table[index] = static_cast<float>(index / 2);
  }
  std::vector<float> cache(colliding.size() * 2);
  for (std::size_t index = 0; index < cache.size(); ++index) {
    cache[index] = -static_cast<float>(index / 2 + 1);
  }
  ngemb::host_resident_rows_ref<float> rows;
  rows.tables[1] = table.data();
  rows.width = 2;
  rows.cache_slots = slots.data();
  rows.cache_rows = cache.data();
  rows.cache_mask = 15;
  for (std::size_t index = 0; index < colliding.size(); ++index) {
    CHECK(rows.row(1, colliding[index] & 0xffffffffu) == cache.data() + index * 2);
  }
  // The ninth key's probe meets 8 full slots and gives up: the table's row.
  CHECK(rows.row(1, left_out) == table.data() + left_out * 2);
  // A row whose home slot is empty is a miss at the first read; sub-table 0 shares no key with sub-table 1.
  for (std::uint64_t id = 0; id < table_rows; ++id) {
    if (rows.cached_row(1, id) == nullptr) {
      CHECK(rows.row(1, id)[0] == static_cast<float>(id));
    }
  }
  rows.tables[0] = table.data();
  CHECK(rows.row(0, colliding[0] & 0xffffffffu) == table.data() + (colliding[0] & 0xffffffffu) * 2);
}

TEST_CASE("host_resident_store: errors name the value and the expectation") {
  const auto config = small_config();
  const written_tables written(config, "resident_errors");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder);
  const ngemb::host_policy policy;
  const std::size_t total = total_rows(config);

  SUBCASE("a dtype the host cannot read in place") {
    CHECK_THROWS_WITH_AS(ngemb::host_resident_store<float>::load(policy, checkpoint, "model", config),
                         doctest::Contains("has dtype BF16, expected F32"), ngemb::format_error);
  }
  SUBCASE("a cache larger than the sub-tables") {
    const std::string message = "cached_rows = " + std::to_string(total + 1) + " exceeds the " +
                                std::to_string(total) + " rows of all sub-tables";
    CHECK_THROWS_WITH_AS(resident_bf16::load(policy, checkpoint, "model", config, {.cached_rows = total + 1}),
                         doctest::Contains(message.c_str()), ngemb::invalid_argument);
    CHECK_THROWS_WITH_AS(resident_bf16(ngemb::mmap_store<ngemb::bf16>(checkpoint, "model", config),
                                       {.cached_rows = total + 1}),
                         doctest::Contains(message.c_str()), ngemb::invalid_argument);
    CHECK_NOTHROW(resident_bf16::load(policy, checkpoint, "model", config, {.cached_rows = total}));
  }
  SUBCASE("ids that are not whole tokens, or outside their sub-table") {
    auto store = resident_bf16::load(policy, checkpoint, "model", config, {.cached_rows = 4});
    std::vector<std::uint32_t> ids = skewed_ids(config, 3, 5);
    CHECK_THROWS_WITH_AS(store.cache_rows(policy, ngemb::view<const std::uint32_t>(ids.data(), 7)),
                         doctest::Contains("7 ids are not whole tokens of T = 6 ids"), ngemb::shape_mismatch);
    ids[6 + 3] = 30;  // sub-table 3 has m_3 = 30 rows
    CHECK_THROWS_WITH_AS(store.cache_rows(policy, ngemb::view<const std::uint32_t>(ids)),
                         doctest::Contains("id 30 at position 9 is outside sub-table 3's rows [0, 30)"),
                         ngemb::invalid_argument);
  }
}

TEST_CASE("host_resident_store: ngram_embedding over it equals the mmap store's bit for bit, with the cache too") {
  const ngemb::host_policy policy;
  ngemb_test::check_resident_embedding<resident_bf16, ngemb::mmap_store<ngemb::bf16>>(policy, "bf16_sharded", 40, 3);
  ngemb_test::check_resident_embedding<ngemb::host_resident_store<float>, ngemb::mmap_store<float>>(
      policy, "f32_single", 25, 4);
}

// ---- Row ranges: a store holding one range of rows of each sub-table (a rank's shard) ----------------------------

namespace {

/// One range per sub-table of small_config() (m_i = 24, 26, ..., 34): empty at the start, the last rows, a whole
/// table, rows in the middle, empty at the end, all but the first row.
std::vector<ngemb::row_range> mixed_ranges(const ngemb::ngram_config& config) {
  return {{0, 0}, {config.modulus(1) - 5, 5}, {0, config.modulus(2)}, {3, 7}, {config.modulus(4), 0},
          {1, config.modulus(5) - 1}};
}

/// Every row `part` holds equals, bit for bit, the row of `whole` it stands for; the base tables too.
template <class Part, class Whole>
void check_local_rows(const Part& part, const Whole& whole, std::span<const ngemb::row_range> ranges) {
  using element = typename Part::element_type;
  static_assert(std::is_same_v<element, typename Whole::element_type>);
  REQUIRE(part.num_tables() == whole.num_tables());
  REQUIRE(part.has_base() == whole.has_base());
  const auto local = part.ref();
  const auto global = whole.ref();
  const auto row_bytes = static_cast<std::size_t>(part.row_width()) * sizeof(element);
  for (int table = 0; table < part.num_tables(); ++table) {
    const ngemb::row_range range = ranges[static_cast<std::size_t>(table)];
    CAPTURE(table);
    CHECK(part.range(table) == range);
    CHECK(part.rows(table) == range.count);
    for (std::int64_t row = 0; row < range.count; ++row) {
      CHECK(std::memcmp(local.row(table, static_cast<std::uint64_t>(row)),
                        global.row(table, static_cast<std::uint64_t>(range.first + row)), row_bytes) == 0);
    }
  }
  if (part.has_base()) {
    CHECK(std::memcmp(local.base_row(0), global.base_row(0),
                      static_cast<std::size_t>(part.vocab_size() * part.hidden_size()) * sizeof(element)) == 0);
  }
}


}  // namespace

TEST_CASE("row ranges: table_store and mmap_store hold just the rows asked for, bit for bit") {
  const auto config = small_config();
  const written_tables written(config, "ranges");
  const ngemb::host_policy policy;
  const std::vector<ngemb::row_range> ranges = mixed_ranges(config);
  const std::vector<ngemb::row_range> full = ngemb::detail::full_row_ranges(config);
  for (const auto mapping : {ngemb::checkpoint_mapping::whole_files, ngemb::checkpoint_mapping::on_demand}) {
    CAPTURE(static_cast<int>(mapping));
    const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder, mapping);
    const auto whole_float = ngemb::table_store<float>::load(policy, checkpoint, "model", config);
    const auto whole_bf16 = ngemb::table_store<ngemb::bf16>::load(policy, checkpoint, "model", config);
    const ngemb::mmap_store<ngemb::bf16> whole_mapped(checkpoint, "model", config);
    for (int table = 0; table < config.num_tables(); ++table) {
      CHECK(whole_float.range(table) == ngemb::row_range{0, config.modulus(table)});
      CHECK(whole_mapped.range(table) == ngemb::row_range{0, config.modulus(table)});
    }

    // fp32 converted from the bf16 file, and the file's own dtype, copied and mapped.
    check_local_rows(ngemb::table_store<float>::load_rows(policy, checkpoint, "model", config, ranges), whole_float,
                     ranges);
    check_local_rows(ngemb::table_store<ngemb::bf16>::load_rows(policy, checkpoint, "model", config, ranges),
                     whole_bf16, ranges);
    check_local_rows(ngemb::mmap_store<ngemb::bf16>::load_rows(checkpoint, "model", config, ranges), whole_mapped,
                     ranges);
    check_local_rows(ngemb::mmap_store<ngemb::bf16>::load_rows(policy, checkpoint, "model", config, ranges),
                     whole_bf16, ranges);
    // The full ranges are the whole store.
    check_local_rows(ngemb::table_store<float>::load_rows(policy, *checkpoint, "model", config, full), whole_float,
                     full);
    check_local_rows(ngemb::mmap_store<ngemb::bf16>::load_rows(checkpoint, "model", config, full), whole_mapped, full);
    check_rows(ngemb::mmap_store<ngemb::bf16>::load_rows(checkpoint, "model", config, full), written, config);
  }
}

TEST_CASE("row ranges: over a checkpoint mapped on demand, a store maps only its rows (and the base table)") {
  ngemb::ngram_config config = small_config();
  config.hidden_size = 384;  // d = 64: bf16 rows of 128 bytes
  config.m_base = 2999;      // m_i = 3000 + 2i: 384 KB per sub-table
  const written_tables written(config, "mapped");
  const std::vector<ngemb::row_range> ranges{{10, 40}, {0, 0}, {config.modulus(2) - 7, 7}, {1500, 100}, {0, 50},
                                             {2000, 1}};
  const ngemb::host_policy policy;
  const auto expected_mapping = [&](const ngemb::safetensors_checkpoint& checkpoint) {
    std::size_t bytes = ngemb_test::mapping_cost(checkpoint, "model.embed_tokens.weight", 0,
                                     static_cast<std::size_t>(config.vocab_size * config.hidden_size) * 2);
    for (int table = 0; table < config.num_tables(); ++table) {
      const ngemb::row_range range = ranges[static_cast<std::size_t>(table)];
      bytes += ngemb_test::mapping_cost(checkpoint, ngemb::ngram_names::embedder("model.ngram_embeddings", table),
                            static_cast<std::size_t>(range.first) * 128,
                            static_cast<std::size_t>(range.first + range.count) * 128);
    }
    return bytes;
  };
  std::size_t file_bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(written.folder)) {
    file_bytes += entry.path().extension() == ".safetensors" ? std::filesystem::file_size(entry.path()) : 0;
  }
  const auto whole = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder);
  CHECK(whole->mapped_bytes() == file_bytes);
  const auto reference = ngemb::table_store<ngemb::bf16>::load(policy, whole, "model", config);

  const auto mapped = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder,
                                                                            ngemb::checkpoint_mapping::on_demand);
  CHECK(mapped->mapped_bytes() == 0);
  const auto shard = ngemb::mmap_store<ngemb::bf16>::load_rows(mapped, "model", config, ranges);
  check_local_rows(shard, reference, ranges);
  const std::size_t expected = expected_mapping(*mapped);
  CHECK(mapped->mapped_bytes() == expected);
  // The rows asked for (198 of 18030, 25 KB) plus the 15 KB base table, each range from its page boundary.
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  CHECK(expected <= 198 * 128 + 19 * 384 * 2 + 6 * page);
  CHECK(expected * 20 < file_bytes);

  const auto copied = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder,
                                                                            ngemb::checkpoint_mapping::on_demand);
  const auto converted = ngemb::table_store<float>::load_rows(policy, copied, "model", config, ranges);
  CHECK(copied->mapped_bytes() == expected_mapping(*copied));
  CHECK(converted.ref().row(3, 99)[63] == ngemb::to_float(reference.ref().row(3, 1599)[63]));
}

TEST_CASE("row ranges: the range constructor allocates just those rows") {
  const auto config = small_config();
  const ngemb::host_policy policy;
  const std::vector<ngemb::row_range> ranges = mixed_ranges(config);
  ngemb::table_store<float> store(policy, config, ranges, true);
  std::int64_t held = 0;
  for (int table = 0; table < config.num_tables(); ++table) {
    CHECK(store.range(table) == ranges[static_cast<std::size_t>(table)]);
    CHECK(store.rows(table) == ranges[static_cast<std::size_t>(table)].count);
    CHECK(store.table(table).size() == static_cast<std::size_t>(store.rows(table) * config.row_width()));
    held += store.rows(table);
  }
  CHECK(store.bytes() == static_cast<std::size_t>(config.vocab_size * config.hidden_size + held * 2) * sizeof(float));
  store.table(3)[6 * 2 + 1] = 2.5f;
  CHECK(store.ref().row(3, 6)[1] == 2.5f);
  const ngemb::table_store<float> without_base(policy, config, ranges, false);
  CHECK_FALSE(without_base.has_base());
  CHECK(without_base.bytes() == static_cast<std::size_t>(held * 2) * sizeof(float));
}

TEST_CASE("row ranges: bad ranges are typed errors naming the sub-table") {
  const auto config = small_config();
  const written_tables written(config, "bad_ranges");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder);
  const ngemb::host_policy policy;
  const auto expect_refused = [&](const std::vector<ngemb::row_range>& ranges, const std::string& needle,
                                  auto error_type) {
    using error = decltype(error_type);
    CAPTURE(needle);
    CHECK_THROWS_WITH_AS(ngemb::table_store<float>(policy, config, ranges, true),
                         doctest::Contains(("table_store: " + needle).c_str()), error);
    CHECK_THROWS_WITH_AS(ngemb::table_store<float>::load_rows(policy, checkpoint, "model", config, ranges),
                         doctest::Contains(("table_store: " + needle).c_str()), error);
    CHECK_THROWS_WITH_AS(ngemb::mmap_store<ngemb::bf16>::load_rows(checkpoint, "model", config, ranges),
                         doctest::Contains(("mmap_store: " + needle).c_str()), error);
  };
  std::vector<ngemb::row_range> ranges = mixed_ranges(config);
  ranges[2] = {-1, 3};
  expect_refused(ranges, "sub-table 2: rows {first -1, count 3} are not inside its 28 rows",
                 ngemb::invalid_argument(""));
  ranges[2] = {27, 2};
  expect_refused(ranges, "sub-table 2: rows {first 27, count 2} are not inside its 28 rows",
                 ngemb::invalid_argument(""));
  ranges[2] = {29, 0};
  expect_refused(ranges, "sub-table 2: rows {first 29, count 0}", ngemb::invalid_argument(""));
  ranges[2] = {4, -1};
  expect_refused(ranges, "sub-table 2: rows {first 4, count -1}", ngemb::invalid_argument(""));
  ranges.pop_back();
  expect_refused(ranges, "5 row ranges given, the config has K*(N-1) = 6 sub-tables", ngemb::shape_mismatch(""));
}

TEST_CASE("row ranges: a store holding part of a sub-table refuses to save; whole ranges save as load does") {
  const auto config = small_config();
  const written_tables written(config, "save_ranges");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(written.folder);
  const ngemb::host_policy policy;
  ngemb::tensor_collection out;
  const std::vector<ngemb::row_range> ranges = mixed_ranges(config);
  CHECK_THROWS_WITH_AS(
      ngemb::table_store<ngemb::bf16>::load_rows(policy, checkpoint, "model", config, ranges).save(policy, "x", out),
      doctest::Contains("table_store: cannot save sub-table 0, of which it holds rows {first 0, count 0} of 24"),
      ngemb::invalid_argument);
  CHECK_THROWS_WITH_AS(
      ngemb::mmap_store<ngemb::bf16>::load_rows(checkpoint, "model", config, ranges).save(policy, "x", out),
      doctest::Contains("mmap_store: cannot save sub-table 0"), ngemb::invalid_argument);
  CHECK(out.entries().empty());
  const std::vector<ngemb::row_range> full = ngemb::detail::full_row_ranges(config);
  ngemb::table_store<ngemb::bf16>::load_rows(policy, checkpoint, "model", config, full).save(policy, "x", out);
  CHECK(out.entries().size() == 1 + static_cast<std::size_t>(config.num_tables()));
}

TEST_CASE("sharded_store over one rank: either lookup gives the reference embedding; all-to-all bit for bit") {
  const ngemb::host_policy policy;
  ngemb_test::check_single_rank_sharded<ngemb::table_store<ngemb::bf16>>(policy, "bf16_sharded", 1e-5);
  ngemb_test::check_single_rank_sharded<ngemb::mmap_store<ngemb::bf16>>(policy, "bf16_sharded", 1e-5);
  ngemb_test::check_single_rank_sharded<ngemb::table_store<float>>(policy, "f32_single", 1e-5);
}
