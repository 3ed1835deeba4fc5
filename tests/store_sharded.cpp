// store/sharded_store.hpp across MPI ranks (ctest runs this program under mpirun with 1, 2, 3 and 4 ranks): the
// split covers every row once; all-to-all lookups equal the unsharded store's rows bit for bit (random batches that
// differ per rank, an empty batch, ids on every shard boundary, batches only one rank serves); the embedding forward
// and the tiny LongCat model give the unsharded results (bit for bit through the all-to-all, within a stated
// tolerance of an fp64 reference through partial projection); each rank maps only its shard of the checkpoint.
#include <doctest/doctest.h>
#include <unistd.h>  // sysconf

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "ngemb/comm/mpi_communicator.hpp"
#include "ngemb/embed/detail/embedding_pipeline.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/presets/longcat.hpp"
#include "ngemb/store/mmap_store.hpp"
#include "ngemb/store/sharded_store.hpp"
#include "ngemb/store/table_store.hpp"
#include "token_batch.hpp"

namespace {

using ngemb::bf16;
using local_store = ngemb::table_store<bf16>;
using sharded = ngemb::sharded_store<local_store, ngemb::mpi_communicator>;
using full_embedding = ngemb::ngram_embedding<ngemb::longcat_hash, local_store>;
using sharded_embedding = ngemb::ngram_embedding<ngemb::longcat_hash, sharded>;
using reference_embedding = ngemb::ngram_embedding<ngemb::longcat_hash, local_store, ngemb::fused_projection<double>>;

/// T = 6 sub-tables of d = 4 with different moduli, so shard boundaries fall inside sub-tables for every rank count.
ngemb::ngram_config shard_config() {
  ngemb::ngram_config config;
  config.vocab_size = 61;
  config.hidden_size = 24;
  config.max_order = 3;
  config.splits = 3;
  config.m_base = 53;
  return config;
}

/// One sub-table (N = 2, K = 1): a batch can then ask rank 0 alone, so the other ranks serve nothing.
ngemb::ngram_config single_table_config() {
  ngemb::ngram_config config = shard_config();
  config.max_order = 2;
  config.splits = 1;
  config.hidden_size = 4;
  config.m_base = 101;
  return config;
}

/// Every rank draws the same tables (fixed seed) and projection weights.
struct model_tables {
  ngemb::ngram_config config;
  std::vector<bf16> base;
  std::vector<std::vector<bf16>> tables;
  std::vector<std::vector<float>> projections;

  explicit model_tables(const ngemb::ngram_config& chosen) : config(chosen) {
    std::mt19937 random(11);
    std::normal_distribution<float> normal;
    for (std::int64_t i = 0; i < config.vocab_size * config.hidden_size; ++i) {
      base.emplace_back(normal(random));
    }
    for (int table = 0; table < config.num_tables(); ++table) {
      tables.emplace_back();
      for (std::int64_t i = 0; i < config.modulus(table) * config.row_width(); ++i) {
        tables.back().emplace_back(normal(random));
      }
      projections.emplace_back();
      for (std::int64_t i = 0; i < config.hidden_size * config.row_width(); ++i) {
        projections.back().push_back(normal(random) * 0.3f);
      }
    }
  }

  [[nodiscard]] std::vector<ngemb::view<const bf16>> table_views() const {
    return {tables.begin(), tables.end()};
  }

  [[nodiscard]] local_store full_store() const {
    const auto views = table_views();
    return local_store(ngemb::host_policy{}, config, ngemb::view<const bf16>(base),
                       std::span<const ngemb::view<const bf16>>(views));
  }

  /// This rank's rows only, copied out of the full tables.
  [[nodiscard]] local_store shard(int rank, int ranks) const {
    const std::vector<ngemb::row_range> ranges = sharded::ranges_of(config, rank, ranks);
    local_store store(ngemb::host_policy{}, config, std::span<const ngemb::row_range>(ranges), true);
    std::copy(base.begin(), base.end(), store.base().data());
    for (int table = 0; table < config.num_tables(); ++table) {
      const ngemb::row_range range = ranges[static_cast<std::size_t>(table)];
      const auto& rows = tables[static_cast<std::size_t>(table)];
      const auto width = static_cast<std::size_t>(config.row_width());
      std::copy_n(rows.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(range.first) * width),
                  static_cast<std::size_t>(range.count) * width, store.table(table).data());
    }
    return store;
  }

  template <class Acc>
  [[nodiscard]] ngemb::fused_projection<Acc> projection() const {
    std::vector<ngemb::view<const float>> views(projections.begin(), projections.end());
    return ngemb::fused_projection<Acc>(
        ngemb::host_policy{},
        ngemb::projection_shape{config.num_tables(), config.row_width(), config.hidden_size},
        std::span<const ngemb::view<const float>>(views));
  }
};

const model_tables& tables() {
  static const model_tables shared(shard_config());
  return shared;
}

/// Rows the unsharded store gathers for ids [count x T].
std::vector<float> unsharded_rows(const local_store& store, const std::vector<std::uint32_t>& ids) {
  const std::size_t count = ids.size() / static_cast<std::size_t>(store.num_tables());
  std::vector<float> gathered(count * static_cast<std::size_t>(store.num_tables() * store.row_width()));
  ngemb::detail::gather_rows(ngemb::host_policy{}, store, ids.data(), count, ngemb::view<float>(gathered));
  return gathered;
}

std::vector<std::uint32_t> random_ids(const ngemb::ngram_config& config, std::size_t count, unsigned seed) {
  std::mt19937 random(seed);
  std::vector<std::uint32_t> ids;
  for (std::size_t token = 0; token < count; ++token) {
    for (int table = 0; table < config.num_tables(); ++table) {
      ids.push_back(static_cast<std::uint32_t>(random() % static_cast<std::uint32_t>(config.modulus(table))));
    }
  }
  return ids;
}

/// One token per (rank, sub-table, end) for every shard boundary: the first and last row each rank holds of each
/// sub-table, placed in that sub-table's column (the other columns hold row 0).
std::vector<std::uint32_t> boundary_ids(const ngemb::ngram_config& config, int ranks) {
  std::vector<std::uint32_t> ids;
  for (int rank = 0; rank < ranks; ++rank) {
    const std::vector<ngemb::row_range> ranges = sharded::ranges_of(config, rank, ranks);
    for (int table = 0; table < config.num_tables(); ++table) {
      const ngemb::row_range range = ranges[static_cast<std::size_t>(table)];
      if (range.count == 0) {
        continue;
      }
      for (const std::int64_t row : {range.first, range.first + range.count - 1}) {
        for (int column = 0; column < config.num_tables(); ++column) {
          ids.push_back(column == table ? static_cast<std::uint32_t>(row) : 0U);
        }
      }
    }
  }
  return ids;
}

/// A ragged batch of random tokens: `sequences` sequences of 1..6 tokens.
ngemb_test::token_batch random_batch(std::int64_t vocab, std::size_t sequences, unsigned seed) {
  std::mt19937 random(seed);
  ngemb_test::token_batch batch;
  for (std::size_t sequence = 0; sequence < sequences; ++sequence) {
    std::vector<std::int32_t> tokens(1 + random() % 6);
    for (std::int32_t& token : tokens) {
      token = static_cast<std::int32_t>(random() % static_cast<std::uint32_t>(vocab));
    }
    batch.add(tokens);
  }
  return batch;
}

}  // namespace

TEST_CASE("sharded_store: the split gives every row to exactly one rank, in rank order") {
  const ngemb::ngram_config config = shard_config();
  for (int ranks = 1; ranks <= 9; ++ranks) {
    std::int64_t next_global = 0;
    for (int rank = 0; rank < ranks; ++rank) {
      const std::vector<ngemb::row_range> ranges = sharded::ranges_of(config, rank, ranks);
      REQUIRE(ranges.size() == static_cast<std::size_t>(config.num_tables()));
      std::int64_t offset = 0;
      for (int table = 0; table < config.num_tables(); ++table) {
        const ngemb::row_range range = ranges[static_cast<std::size_t>(table)];
        if (range.count != 0) {
          CHECK(offset + range.first == next_global);  // contiguous with the previous rank's rows
          next_global += range.count;
        }
        offset += config.modulus(table);
      }
    }
    std::int64_t total = 0;
    for (int table = 0; table < config.num_tables(); ++table) {
      total += config.modulus(table);
    }
    CHECK(next_global == total);
  }
  CHECK_THROWS_AS(sharded::ranges_of(config, 2, 2), ngemb::invalid_argument);
}

TEST_CASE("sharded_store: all-to-all lookups equal the unsharded rows bit for bit") {
  ngemb::mpi_communicator communicator;
  const int rank = communicator.rank();
  const int ranks = communicator.size();
  const model_tables& model = tables();
  const local_store full = model.full_store();
  sharded store(model.config, model.shard(rank, ranks), communicator,
                {.lookup = ngemb::sharded_lookup::all_to_all});
  const auto width = static_cast<std::size_t>(model.config.num_tables() * model.config.row_width());

  const auto check_lookup = [&](const std::vector<std::uint32_t>& ids, const char* what) {
    INFO(what << " on rank " << rank << " of " << ranks);
    const std::size_t count = ids.size() / static_cast<std::size_t>(model.config.num_tables());
    std::vector<float> gathered(count * width, -1.0f);
    store.communicator().reset_counters();
    store.lookup(ngemb::host_policy{}, ngemb::view<const std::uint32_t>(ids), count, ngemb::view<float>(gathered));
    const std::vector<float> expected = unsharded_rows(full, ids);
    CHECK(std::memcmp(gathered.data(), expected.data(), expected.size() * sizeof(float)) == 0);
    // Three collectives (counts, ids, rows); ids and rows for other ranks are the only payload counted.
    const ngemb::communication_counters counters = store.communicator().counters();
    CHECK(counters.collectives == 3);
    return counters;
  };

  // Different batches per rank, one rank with none (it still serves the others).
  const std::size_t count = ranks > 1 && rank == 1 ? 0 : 17 + 5 * static_cast<std::size_t>(rank);
  const ngemb::communication_counters random_counters =
      check_lookup(random_ids(model.config, count, 100U + static_cast<unsigned>(rank)), "random batch");
  if (ranks == 1) {
    CHECK(random_counters.bytes_sent == 0);
    CHECK(random_counters.bytes_received == 0);
  }
  check_lookup(boundary_ids(model.config, ranks), "every shard boundary");
  check_lookup({}, "an empty batch on every rank");

  // One sub-table, every id in rank 0's rows: the other ranks are asked for nothing and answer nothing.
  const model_tables single(single_table_config());
  const local_store single_full = single.full_store();
  sharded single_store(single.config, single.shard(rank, ranks), communicator,
                       {.lookup = ngemb::sharded_lookup::all_to_all});
  const ngemb::row_range first = sharded::ranges_of(single.config, 0, ranks)[0];
  std::vector<std::uint32_t> ids;
  for (std::int64_t token = 0; token < 11; ++token) {
    ids.push_back(static_cast<std::uint32_t>(first.first + (token * 7 + rank) % first.count));
  }
  std::vector<float> gathered(ids.size() * static_cast<std::size_t>(single.config.row_width()));
  single_store.communicator().reset_counters();
  single_store.lookup(ngemb::host_policy{}, ngemb::view<const std::uint32_t>(ids), ids.size(),
                      ngemb::view<float>(gathered));
  CHECK(gathered == unsharded_rows(single_full, ids));
  const ngemb::communication_counters counters = single_store.communicator().counters();
  const std::uint64_t row_bytes = static_cast<std::uint64_t>(single.config.row_width()) * sizeof(bf16);
  const auto peers = static_cast<std::uint64_t>(ranks - 1);
  const std::uint64_t count_bytes = peers * sizeof(std::size_t);  // one request count to and from every peer
  if (rank == 0) {  // every other rank's 11 ids in, their rows out
    CHECK(counters.bytes_received == count_bytes + 11U * peers * sizeof(std::uint32_t));
    CHECK(counters.bytes_sent == count_bytes + 11U * peers * row_bytes);
  } else {  // its 11 ids out, their rows in
    CHECK(counters.bytes_sent == count_bytes + 11U * sizeof(std::uint32_t));
    CHECK(counters.bytes_received == count_bytes + 11U * row_bytes);
  }
}

TEST_CASE("sharded_store: the embedding forward equals the unsharded one") {
  ngemb::mpi_communicator communicator;
  const int rank = communicator.rank();
  const int ranks = communicator.size();
  const model_tables& model = tables();
  const ngemb::host_policy policy{};
  full_embedding full(model.config, model.full_store(), model.projection<float>());
  reference_embedding reference(model.config, model.full_store(), model.projection<double>());
  sharded_embedding distributed(model.config, sharded(model.config, model.shard(rank, ranks), communicator),
                                model.projection<float>());
  const auto hidden = static_cast<std::size_t>(model.config.hidden_size);

  SUBCASE("all-to-all: each rank its own batch, bit for bit") {
    distributed.store().set_options({.lookup = ngemb::sharded_lookup::all_to_all});
    const ngemb_test::token_batch batch = random_batch(model.config.vocab_size, 3 + static_cast<std::size_t>(rank),
                                                       200U + static_cast<unsigned>(rank));
    std::vector<float> expected(batch.tokens.size() * hidden);
    std::vector<float> got(batch.tokens.size() * hidden, -1.0f);
    full.forward(policy, batch.token_view(), ngemb::view<float>(expected));
    distributed.forward(policy, batch.token_view(), ngemb::view<float>(got));
    CHECK(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0);
  }

  SUBCASE("partial projection and automatic (either way): the same batch everywhere, within 2e-6 of fp64") {
    const ngemb_test::token_batch batch = random_batch(model.config.vocab_size, 7, 300U);
    std::vector<double> exact(batch.tokens.size() * hidden);
    reference.forward(policy, batch.token_view(), ngemb::view<double>(exact));
    for (const std::size_t all_to_all_from : {std::size_t{0}, batch.tokens.size() + 1}) {
      distributed.store().set_options({.lookup = ngemb::sharded_lookup::automatic,
                                       .all_to_all_from_tokens = all_to_all_from});
      CHECK(distributed.store().lookup_for(batch.tokens.size()) ==
            (all_to_all_from == 0 ? ngemb::sharded_lookup::all_to_all : ngemb::sharded_lookup::partial_projection));
      std::vector<float> got(batch.tokens.size() * hidden);
      distributed.forward(policy, batch.token_view(), ngemb::view<float>(got));
      // Outputs are O(1) sums of 6 projected rows of O(1) values: fp32 rounding of the partial sums stays near 1e-7.
      double worst = 0.0;
      for (std::size_t i = 0; i < got.size(); ++i) {
        worst = std::max(worst, std::abs(static_cast<double>(got[i]) - exact[i]));
      }
      INFO("rank " << rank << " of " << ranks << ", all_to_all from " << all_to_all_from << " tokens");
      CHECK(worst < 2e-6);
    }
  }
}

TEST_CASE("sharded_store: the tiny LongCat model gives the unsharded logits") {
  using parts = ngemb::presets::longcat_flash_lite<ngemb::host_policy, bf16>;
  using sharded_parts = ngemb::sharded_store<parts::store, ngemb::mpi_communicator>;
  using sharded_lm = ngemb::causal_lm<
      ngemb::ngram_embedding<parts::hasher, sharded_parts, ngemb::fused_projection<float>>, parts::block, parts::mtp>;
  const std::filesystem::path folder = std::filesystem::path(NGEMB_MODELS_DIR) / "tiny-longcat";
  const ngemb::host_policy policy{};
  auto full = parts::model::load(policy, folder);
  // Mapped on demand: this rank maps its rows of the n-gram tables and the other parts' tensors, nothing more.
  auto distributed = sharded_lm::load(policy, folder, {}, {.mapping = ngemb::checkpoint_mapping::on_demand});
  const std::int64_t vocab = full.config().vocab_size();
  const ngemb_test::token_batch batch = random_batch(vocab, 3, 400U);
  using sequence_id = parts::model::sequence_id;

  for (const ngemb::sharded_lookup lookup : {ngemb::sharded_lookup::all_to_all,
                                             ngemb::sharded_lookup::partial_projection}) {
    distributed.embedding().store().set_options({.lookup = lookup});
    std::vector<sequence_id> sequences;
    for (int sequence = 0; sequence < 3; ++sequence) {
      sequences.push_back(full.start_sequence());
      REQUIRE(distributed.start_sequence() == sequences.back());
    }
    std::vector<float> expected(batch.tokens.size() * static_cast<std::size_t>(vocab));
    std::vector<float> got(expected.size());
    const ngemb::forward_options every{.logits = ngemb::logits_for::every_token};
    full.forward(policy, ngemb::view<const sequence_id>(sequences), batch.token_view(), ngemb::view<float>(expected),
                 every);
    distributed.forward(policy, ngemb::view<const sequence_id>(sequences), batch.token_view(),
                        ngemb::view<float>(got), every);
    // Then a decode step, whose n-grams reach back into the cached prompt.
    const std::vector<std::int32_t> next{5, 17, 30};
    const std::vector<std::int64_t> one_each{0, 1, 2, 3};
    const ngemb::ragged_view<const std::int32_t> step(next, one_each);
    std::vector<float> expected_step(3 * static_cast<std::size_t>(vocab));
    std::vector<float> got_step(expected_step.size());
    full.forward(policy, ngemb::view<const sequence_id>(sequences), step, ngemb::view<float>(expected_step));
    distributed.forward(policy, ngemb::view<const sequence_id>(sequences), step, ngemb::view<float>(got_step));
    INFO("rank " << distributed.embedding().store().communicator().rank() << ", lookup "
                 << static_cast<int>(lookup));
    if (lookup == ngemb::sharded_lookup::all_to_all) {
      CHECK(got == expected);
      CHECK(got_step == expected_step);
    } else {
      double worst = 0.0;
      for (std::size_t i = 0; i < got.size(); ++i) {
        worst = std::max(worst, std::abs(static_cast<double>(got[i]) - expected[i]));
      }
      for (std::size_t i = 0; i < got_step.size(); ++i) {
        worst = std::max(worst, std::abs(static_cast<double>(got_step[i]) - expected_step[i]));
      }
      CHECK(worst < 1e-3);  // embedding differences of ~1e-7 through 2 layers and the head
    }
    for (const sequence_id sequence : sequences) {
      full.end_sequence(sequence);
      distributed.end_sequence(sequence);
    }
  }
}

TEST_CASE("sharded_store: each rank maps only its shard of the checkpoint, and serves the written rows") {
  ngemb::mpi_communicator communicator;
  const int rank = communicator.rank();
  const int ranks = communicator.size();
  // Sub-tables of ~8K rows (64 KB each), so the pages a shard's edges round out to are small beside the shard.
  ngemb::ngram_config config = shard_config();
  config.m_base = 8191;
  const model_tables model(config);
  // Each rank writes its own copy (no shared file system assumed), the sub-tables in bf16, one tensor per shard.
  const std::filesystem::path folder = std::filesystem::temp_directory_path() /
                                       ("ngemb_sharded_" + std::to_string(std::random_device{}()) + "_" +
                                        std::to_string(rank));
  std::filesystem::create_directories(folder);
  std::vector<ngemb::tensor_to_write> tensors;
  tensors.push_back(ngemb::tensor_to_write::of("model.embed_tokens.weight",
                                               {model.config.vocab_size, model.config.hidden_size},
                                               ngemb::view<const bf16>(model.base)));
  for (int table = 0; table < model.config.num_tables(); ++table) {
    tensors.push_back(ngemb::tensor_to_write::of(
        ngemb::ngram_names::embedder("model.ngram_embeddings", table),
        {model.config.modulus(table), model.config.row_width()},
        ngemb::view<const bf16>(model.tables[static_cast<std::size_t>(table)])));
  }
  ngemb::write_safetensors_checkpoint(folder, tensors, 100'000);  // several files
  {
    const auto checkpoint =
        std::make_shared<const ngemb::safetensors_checkpoint>(folder, ngemb::checkpoint_mapping::on_demand);
    using mapped = ngemb::sharded_store<ngemb::mmap_store<bf16>, ngemb::mpi_communicator>;
    mapped store = mapped::load(ngemb::host_policy{}, checkpoint, "model", model.config, communicator,
                                {.lookup = ngemb::sharded_lookup::all_to_all});

    // What this rank may map: the base table and its rows of each sub-table, each rounded out to whole pages.
    const std::vector<ngemb::row_range> mine = mapped::ranges_of(model.config, rank, ranks);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t row_bytes = static_cast<std::size_t>(model.config.row_width()) * sizeof(bf16);
    std::size_t shard_bytes = 0;
    std::size_t allowed = model.base.size() * sizeof(bf16) + 2 * page;
    for (const ngemb::row_range range : mine) {
      shard_bytes += static_cast<std::size_t>(range.count) * row_bytes;
      allowed += range.count == 0 ? 0 : static_cast<std::size_t>(range.count) * row_bytes + 2 * page;
    }
    std::size_t all_tables = 0;
    for (const auto& rows : model.tables) {
      all_tables += rows.size() * sizeof(bf16);
    }
    INFO("rank " << rank << " of " << ranks << ": mapped " << checkpoint->mapped_bytes() << " bytes, shard "
                 << shard_bytes << ", all sub-tables " << all_tables);
    CHECK(checkpoint->mapped_bytes() <= allowed);
    CHECK(checkpoint->mapped_bytes() >= shard_bytes);
    if (ranks > 1) {  // the bound itself excludes the other ranks' rows
      CHECK(allowed - model.base.size() * sizeof(bf16) < all_tables * 2 / static_cast<std::size_t>(ranks));
    }

    const local_store full = model.full_store();
    const std::vector<std::uint32_t> ids = random_ids(model.config, 23, 500U + static_cast<unsigned>(rank));
    std::vector<float> gathered(ids.size() * static_cast<std::size_t>(model.config.row_width()));
    store.lookup(ngemb::host_policy{}, ngemb::view<const std::uint32_t>(ids), 23, ngemb::view<float>(gathered));
    CHECK(gathered == unsharded_rows(full, ids));
  }
  std::filesystem::remove_all(folder);
}

TEST_CASE("sharded_store: bad input is a typed error on every rank, before any collective") {
  ngemb::mpi_communicator communicator;
  const int rank = communicator.rank();
  const int ranks = communicator.size();
  const model_tables& model = tables();

  // The shard of another rank count: its rows are not this rank's.
  CHECK_THROWS_WITH_AS(sharded(model.config, model.shard(0, ranks + 1), communicator),
                       doctest::Contains("must hold rows ["), ngemb::shape_mismatch);

  sharded store(model.config, model.shard(rank, ranks), communicator,
                {.lookup = ngemb::sharded_lookup::partial_projection});
  const ngemb::fused_projection<float> projection = model.projection<float>();
  const std::vector<std::uint32_t> ids = random_ids(model.config, 4, 600U);
  std::vector<float> branch(4 * static_cast<std::size_t>(model.config.hidden_size));
  CHECK_THROWS_WITH_AS(store.project(ngemb::host_policy{}, ngemb::view<const std::uint32_t>(ids), 3, projection,
                                     ngemb::view<float>(branch)),
                       doctest::Contains("3 tokens need 18 ids"), ngemb::shape_mismatch);
  if (ranks > 1) {
    // Partial projection sums the same tokens' shares: a rank with a different batch fails on every rank.
    const std::size_t count = rank == ranks - 1 ? 3 : 4;
    CHECK_THROWS_WITH_AS(store.project(ngemb::host_policy{}, ngemb::view<const std::uint32_t>(ids.data(), count * 6),
                                       count, projection,
                                       ngemb::view<float>(branch.data(), count * static_cast<std::size_t>(
                                                                                  model.config.hidden_size))),
                         doctest::Contains("needs the same batch on every rank"), ngemb::shape_mismatch);
  }
  // An id past its sub-table's rows (all ranks ask the same, so none waits in a collective the others skipped).
  std::vector<std::uint32_t> outside = ids;
  outside[6 + 2] = static_cast<std::uint32_t>(model.config.modulus(2));
  std::vector<float> gathered(4 * 6 * static_cast<std::size_t>(model.config.row_width()));
  CHECK_THROWS_WITH_AS(store.lookup(ngemb::host_policy{}, ngemb::view<const std::uint32_t>(outside), 4,
                                    ngemb::view<float>(gathered)),
                       ("sharded_store::lookup: token 1 asks for row " + std::to_string(model.config.modulus(2)) +
                        " of sub-table 2, which has " + std::to_string(model.config.modulus(2)) + " rows")
                           .c_str(),
                       ngemb::invalid_argument);
  ngemb::tensor_collection out;
  CHECK_THROWS_WITH_AS(store.save(ngemb::host_policy{}, "model", out), doctest::Contains("holds only its shard"),
                       ngemb::invalid_argument);
}
