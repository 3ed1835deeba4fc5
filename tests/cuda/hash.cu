// Device hashing equals host hashing on random ragged batches (EOS-dense, with context, both id types and
// layouts), and bad input raises the same typed errors as on the host.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "cache_property.hpp"
#include "token_batch.hpp"
#include "ngemb/hash/hash_tokens.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/policy/host_policy.hpp"

namespace {

ngemb_test::token_batch make_batch(const ngemb::ngram_config& config, std::mt19937& random, int sequences,
                                   int max_length) {
  ngemb_test::token_batch batch;
  std::uniform_int_distribution<std::int32_t> token(0, static_cast<std::int32_t>(config.vocab_size - 1));
  const auto draw = [&] {
    return random() % 5 == 0 ? static_cast<std::int32_t>(config.eos_token.value_or(0)) : token(random);
  };
  for (int s = 0; s < sequences; ++s) {
    std::vector<std::int32_t> sequence(static_cast<std::size_t>(random() % static_cast<unsigned>(max_length + 1)));
    std::generate(sequence.begin(), sequence.end(), draw);
    std::vector<std::int32_t> context(static_cast<std::size_t>(random() % 6));
    std::generate(context.begin(), context.end(), draw);
    batch.add(sequence, context);
  }
  return batch;
}

template <class Id>
void compare_device_with_host(const ngemb::ngram_config& config, unsigned seed, ngemb::id_layout layout) {
  std::mt19937 random(seed);
  const ngemb::longcat_hash hasher(config);
  const auto batch = make_batch(config, random, 97, 300);
  const std::size_t count = batch.tokens.size() * static_cast<std::size_t>(hasher.num_tables());

  std::vector<Id> host_ids(count);
  ngemb::hash_tokens(ngemb::host_policy{}, hasher,
                     batch.token_view(), batch.context_view(),
                     ngemb::view<Id>(host_ids), layout);

  const ngemb::device_policy policy{};
  const ngemb_test::staging<ngemb::device_policy> stage{policy};
  const auto tokens = stage.to_policy(batch.tokens);
  const auto offsets = stage.to_policy(batch.offsets);
  const auto context = stage.to_policy(batch.context);
  const auto context_offsets = stage.to_policy(batch.context_offsets);
  // Poison the output so an unwritten id cannot pass.
  auto device_ids = stage.to_policy(std::vector<Id>(count, Id(0x5a5a5a5a)));
  ngemb::hash_tokens(policy, hasher, ngemb::ragged_view<const std::int32_t>(tokens.as_view(), offsets.as_view()),
                     ngemb::ragged_view<const std::int32_t>(context.as_view(), context_offsets.as_view()),
                     device_ids.as_view(), layout);
  CHECK(stage.to_host(device_ids) == host_ids);
}

}  // namespace

TEST_CASE("device ids equal host ids on random ragged batches") {
  auto lite = ngemb::ngram_config::longcat_flash_lite();
  for (unsigned seed = 1; seed <= 4; ++seed) {
    compare_device_with_host<std::int64_t>(lite, seed, ngemb::id_layout::per_table);
    compare_device_with_host<std::uint32_t>(lite, seed, ngemb::id_layout::concatenated);
  }
  auto other = lite;
  other.vocab_size = 32000;
  other.max_order = 6;
  other.splits = 3;
  other.ratio = 17.25;
  other.ignored_tokens = {0, 31999};
  compare_device_with_host<std::int64_t>(other, 9, ngemb::id_layout::per_table);
}

TEST_CASE("device: bad tokens and offsets raise typed errors") {
  const ngemb::longcat_hash hasher(ngemb::ngram_config::longcat_flash_lite());
  const ngemb::device_policy policy{};
  const ngemb_test::staging<ngemb::device_policy> stage{policy};
  const auto tokens = stage.to_policy(std::vector<std::int32_t>{1, 2, 3, 131072});
  const auto offsets = stage.to_policy(std::vector<std::int64_t>{0, 1, 4});
  ngemb::device_buffer<std::int64_t> ids(policy, 4 * 12);
  CHECK_THROWS_WITH_AS(
      ngemb::hash_tokens(policy, hasher, ngemb::ragged_view<const std::int32_t>(tokens.as_view(), offsets.as_view()),
                         ids.as_view()),
      "hash_tokens: tokens: token id 131072 at sequence 1, position 2 (flat index 3) is outside [0, 131072)",
      ngemb::invalid_argument);
  const auto bad_offsets = stage.to_policy(std::vector<std::int64_t>{0, 3, 2});
  CHECK_THROWS_WITH_AS(
      ngemb::hash_tokens(policy, hasher,
                         ngemb::ragged_view<const std::int32_t>(tokens.as_view(), bad_offsets.as_view()), ids.as_view()),
      "hash_tokens: tokens: offsets[2] = 2 is less than offsets[1] = 3", ngemb::shape_mismatch);
}

TEST_CASE("device: deferred checks let the launch run without a sync and raise afterwards") {
  const ngemb::longcat_hash hasher(ngemb::ngram_config::longcat_flash_lite());
  cudaStream_t stream = nullptr;
  NGEMB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    const ngemb::device_policy policy{stream};
    const ngemb_test::staging<ngemb::device_policy> stage{policy};
    const auto tokens = stage.to_policy(std::vector<std::int32_t>{7, 8, 9, 131075, 11});
    const auto garbage_offsets = stage.to_policy(std::vector<std::int64_t>{-40, 99, 5});
    ngemb::device_buffer<std::int64_t> ids(policy, 5 * 12);
    ngemb::input_checks<ngemb::device_policy> deferred(policy);
    ngemb::hash_tokens_async(policy, hasher,
                             ngemb::ragged_view<const std::int32_t>(tokens.as_view(), garbage_offsets.as_view()),
                             ids.as_view(), ngemb::id_layout::per_table, deferred);
    CHECK_THROWS_AS(deferred.raise_if_failed(), ngemb::shape_mismatch);
    NGEMB_CUDA_CHECK(cudaStreamSynchronize(stream));  // the kernel itself ran without a fault
  }
  NGEMB_CUDA_CHECK(cudaStreamDestroy(stream));
}
