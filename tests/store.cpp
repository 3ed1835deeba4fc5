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
