// store/ on the device: the embedding forward over host_resident_store (sub-tables in mapped page-locked host
// memory, read over the bus by the gather kernel; the base table in device memory) equals it over table_store bit
// for bit, loaded as ngram_embedding::load does and with the hot-row cache filled (tests/resident_store_check.hpp,
// which the host tests run against mmap_store). A sharded_store over one device rank gives the reference embedding.
#include <doctest/doctest.h>

#include <cstddef>
#include <memory>

#include "ngemb/policy/device_policy.cuh"
#include "ngemb/store/host_resident_store.cuh"
#include "ngemb/store/table_store.hpp"
#include "resident_store_check.hpp"
#include "sharded_store_check.hpp"

namespace {

template <class T>
using resident = ngemb::host_resident_store<T, ngemb::device_policy>;
template <class T>
using owned = ngemb::table_store<T, ngemb::device_policy>;

}  // namespace

TEST_CASE("device host_resident_store: the embedding equals table_store's bit for bit, with and without the cache") {
  const ngemb::device_policy policy{};
  ngemb_test::check_resident_embedding<resident<ngemb::bf16>, owned<ngemb::bf16>>(policy, "bf16_sharded", 40, 3);
  // Stored bf16, held in fp32: both stores widen on load.
  ngemb_test::check_resident_embedding<resident<float>, owned<float>>(policy, "bf16_sharded", 40, 5);
  ngemb_test::check_resident_embedding<resident<float>, owned<float>>(policy, "f32_single", 25, 4);
}

TEST_CASE("device host_resident_store: sub-tables pinned in host memory, the base table on the device") {
  const ngemb::device_policy policy{};
  const auto golden = ngemb_test::load_embedding_golden("bf16_sharded");
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(golden.folder);
  const auto store = resident<ngemb::bf16>::load(policy, checkpoint, ngemb::ngram_names::released_owner, golden.config);
  const auto rows = store.ref();
  cudaPointerAttributes table{};
  REQUIRE(cudaPointerGetAttributes(&table, rows.tables[0]) == cudaSuccess);
  CHECK(table.type == cudaMemoryTypeHost);
  cudaPointerAttributes base{};
  REQUIRE(cudaPointerGetAttributes(&base, rows.base) == cudaSuccess);
  CHECK(base.type == cudaMemoryTypeDevice);
  std::size_t sub_table_elements = 0;
  for (int index = 0; index < store.num_tables(); ++index) {
    sub_table_elements += static_cast<std::size_t>(store.rows(index) * store.row_width());
  }
  CHECK(store.tables().pinned_bytes() == sub_table_elements * sizeof(ngemb::bf16));
  CHECK(store.tables().device_bytes() ==
        static_cast<std::size_t>(golden.config.vocab_size * golden.config.hidden_size) * sizeof(ngemb::bf16));
}

TEST_CASE("device sharded_store over one rank: either lookup gives the reference embedding; all-to-all bit for bit") {
  const ngemb::device_policy policy{};
  ngemb_test::check_single_rank_sharded<owned<ngemb::bf16>>(policy, "bf16_sharded", 1e-5);
  ngemb_test::check_single_rank_sharded<owned<float>>(policy, "f32_single", 1e-5);
}
