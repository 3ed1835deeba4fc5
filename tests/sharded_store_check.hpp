#pragma once
// sharded_store over one rank (self_communicator), on any policy: the embedding forward through either lookup
// matches the fp64 reference of the embedding goldens, prefill and through the n-gram cache, and the all-to-all
// output equals the unsharded store's bit for bit. Host (tests/store.cpp, also under the sanitizers) and device
// (tests/cuda/store.cu) run it; tests/store_sharded.cpp covers 1-4 MPI ranks.
#include <doctest/doctest.h>

#include <cstddef>
#include <string>
#include <vector>

#include "embedding_golden.hpp"
#include "ngemb/comm/self_communicator.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/store/sharded_store.hpp"

namespace ngemb_test {

template <class Local, class Policy>
void check_single_rank_sharded(const Policy& policy, const std::string& golden_name, double tolerance) {
  using projection = ngemb::fused_projection<float, Policy>;
  using sharded = ngemb::sharded_store<Local, ngemb::self_communicator<Policy>>;
  const embedding_golden golden = load_embedding_golden(golden_name);
  auto whole = ngemb::ngram_embedding<ngemb::longcat_hash, Local, projection>::load(policy, golden.folder);
  auto split = ngemb::ngram_embedding<ngemb::longcat_hash, sharded, projection>::load(policy, golden.folder);
  const auto width = static_cast<std::size_t>(golden.config.hidden_size);
  const policy_batch<Policy> batch(policy, golden.batch);
  auto expected = to_policy(policy, std::vector<float>(golden.batch.tokens.size() * width, 0.0f));
  whole.forward(policy, batch.view(), expected.as_view());
  for (const ngemb::sharded_lookup lookup : {ngemb::sharded_lookup::all_to_all,
                                             ngemb::sharded_lookup::partial_projection}) {
    INFO(golden_name << ", lookup " << static_cast<int>(lookup));
    split.store().set_options({.lookup = lookup});
    check_prefill<float>(policy, split, golden, "none", tolerance);
    check_through_cache(policy, split, golden, "none", 23);
    if (lookup == ngemb::sharded_lookup::all_to_all) {
      auto got = to_policy(policy, std::vector<float>(golden.batch.tokens.size() * width, -7.0f));
      split.forward(policy, batch.view(), got.as_view());
      CHECK(to_host(policy, ngemb::view<const float>(got.as_view())) ==
            to_host(policy, ngemb::view<const float>(expected.as_view())));
    }
  }
}

}  // namespace ngemb_test
