#pragma once
// The embedding forward over host_resident_store against a reference store, bit for bit, on a random ragged batch,
// without and with the hot-row cache, and what both stores save: run by tests/store.cpp (host policy, against
// mmap_store) and tests/cuda/store.cu (device policy, against table_store).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "embedding_golden.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/io/checkpoint_names.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "token_batch.hpp"

namespace ngemb_test {

inline bool same_bits(const std::vector<float>& got, const std::vector<float>& want) {
  return got.size() == want.size() && std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0;
}

/// Sequences of 1-24 random tokens (never all zero), `sequences` of them.
inline token_batch random_tokens(const ngemb::ngram_config& config, std::size_t sequences, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<std::size_t> length(1, 24);
  std::uniform_int_distribution<std::int32_t> token(1, static_cast<std::int32_t>(config.vocab_size - 1));
  token_batch batch;
  for (std::size_t s = 0; s < sequences; ++s) {
    std::vector<std::int32_t> sequence(length(random));
    for (auto& value : sequence) {
      value = token(random);
    }
    batch.add(sequence);
  }
  return batch;
}

template <class Policy, class Embedding>
std::vector<float> forward_to_host(const Policy& policy, Embedding& embedding, const token_batch& batch) {
  const policy_batch<Policy> tokens(policy, batch);
  const auto width = static_cast<std::size_t>(embedding.output_width());
  auto out = to_policy(policy, std::vector<float>(batch.tokens.size() * width));
  embedding.forward(policy, tokens.view(), out.as_view());
  return to_host(policy, ngemb::view<const float>(out.as_view()));
}

/// ngram_embedding over `Resident` (a host_resident_store) equals it over `Reference` on the golden checkpoint
/// `golden_name`: loaded as ngram_embedding::load does, then with `cached_rows` hot rows cached from the reference's
/// ids of the same batch (so the gather reads them from the cache). The stores save the same tensors.
template <class Resident, class Reference, class Policy>
void check_resident_embedding(const Policy& policy, const std::string& golden_name, std::size_t cached_rows,
                              unsigned seed) {
  const embedding_golden golden = load_embedding_golden(golden_name);
  const auto checkpoint = std::make_shared<const ngemb::safetensors_checkpoint>(golden.folder);
  using reference_type = ngemb::ngram_embedding<ngemb::longcat_hash, Reference>;
  using resident_type = ngemb::ngram_embedding<ngemb::longcat_hash, Resident>;
  using projection_type = typename resident_type::projection_type;
  auto reference = reference_type::load(policy, golden.folder);
  auto resident = resident_type::load(policy, golden.folder);
  const token_batch batch = random_tokens(golden.config, 5, seed);
  const std::vector<float> want = forward_to_host(policy, reference, batch);
  CHECK(same_bits(forward_to_host(policy, resident, batch), want));

  const std::string owner = ngemb::ngram_names::released_owner;
  auto store = Resident::load(policy, checkpoint, owner, golden.config, {.cached_rows = cached_rows});
  store.cache_rows(policy, reference.last_ids());
  CHECK(store.cached_rows() == cached_rows);
  auto projection = projection_type::load(
      policy, *checkpoint, ngemb::ngram_names::module(owner),
      typename projection_type::shape(ngemb::projection_shape{.num_tables = golden.config.num_tables(),
                                                              .row_width = golden.config.row_width(),
                                                              .output_width = golden.config.hidden_size}));
  resident_type cached(golden.config, std::move(store), std::move(projection));
  CHECK(same_bits(forward_to_host(policy, cached, batch), want));

  ngemb::tensor_collection saved_resident;
  ngemb::tensor_collection saved_reference;
  resident.store().save(policy, owner, saved_resident);
  reference.store().save(policy, owner, saved_reference);
  REQUIRE(saved_resident.tensors().size() == saved_reference.tensors().size());
  for (std::size_t index = 0; index < saved_resident.tensors().size(); ++index) {
    const ngemb::tensor_to_write& got = saved_resident.tensors()[index];
    const ngemb::tensor_to_write& expected = saved_reference.tensors()[index];
    CAPTURE(expected.name);
    CHECK(got.name == expected.name);
    CHECK(got.shape == expected.shape);
    CHECK((got.data.size() == expected.data.size() &&
           std::memcmp(got.data.data(), expected.data.data(), got.data.size()) == 0));
  }
}

}  // namespace ngemb_test
