// store/: table_store and mmap_store hand out the same rows for the same tables, from host arrays or a checkpoint
// written with the library's writer, and name the tensor that is missing or misshapen.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/store/mmap_store.hpp"
#include "ngemb/store/table_store.hpp"
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

// ---- Row ranges: a store holding one range of rows of each sub-table (a rank's shard) ----------------------------

#include <unistd.h>  // sysconf

#include <array>
#include <cstring>
#include <fstream>
#include <span>

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

/// Where the data buffer of a safetensors file starts: 8 + its little-endian header length.
std::size_t data_start(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  std::array<unsigned char, 8> length{};
  stream.read(reinterpret_cast<char*>(length.data()), 8);
  std::size_t header = 0;
  for (int i = 7; i >= 0; --i) {
    header = (header << 8) | length[static_cast<std::size_t>(i)];
  }
  return 8 + header;
}

/// Bytes mapped for bytes [begin, end) of a tensor: from the page at or below its first file byte to its end.
std::size_t mapping_cost(const ngemb::safetensors_checkpoint& checkpoint, const std::string& name, std::size_t begin,
                         std::size_t end) {
  if (begin == end) {
    return 0;
  }
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t start = data_start(checkpoint.file_of(name).path()) + checkpoint.info(name).begin;
  return start + end - (start + begin) / page * page;
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
    std::size_t bytes = mapping_cost(checkpoint, "model.embed_tokens.weight", 0,
                                     static_cast<std::size_t>(config.vocab_size * config.hidden_size) * 2);
    for (int table = 0; table < config.num_tables(); ++table) {
      const ngemb::row_range range = ranges[static_cast<std::size_t>(table)];
      bytes += mapping_cost(checkpoint, ngemb::ngram_names::embedder("model.ngram_embeddings", table),
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
