// Whole models on the device: the same PyTorch reference checks as tests/causal_lm.cpp (model_golden.hpp), with
// every part in device memory, and save from the device reloaded on the host giving the same logits.
#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

#include "model_golden.hpp"
#include "ngemb/embed/ngram_embedding.hpp"
#include "ngemb/hash/longcat_hash.hpp"
#include "ngemb/model/causal_lm.hpp"
#include "ngemb/moe/moe_layer.hpp"
#include "ngemb/moe/swiglu.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "ngemb/store/table_store.hpp"
#include "temp_folder.hpp"

namespace {

template <class Policy>
using embedding = ngemb::ngram_embedding<ngemb::longcat_hash, ngemb::table_store<float, Policy>>;
template <class Policy>
using expert_layer = ngemb::moe<ngemb::softmax_router<Policy>, float>;
template <class Policy>
using shortcut_lm = ngemb::causal_lm<
    embedding<Policy>,
    ngemb::shortcut_block<ngemb::attention<Policy>, ngemb::swiglu<float, Policy>, expert_layer<Policy>>>;
template <class Policy>
using prenorm_lm =
    ngemb::causal_lm<embedding<Policy>, ngemb::prenorm_block<ngemb::attention<Policy>, expert_layer<Policy>>>;

const ngemb::device_policy device{};

}  // namespace

TEST_CASE("device: LongCat shortcut-block model matches the PyTorch reference") {
  ngemb_test::check_against_reference<shortcut_lm<ngemb::device_policy>>(device, "shortcut");
}

TEST_CASE("device: pre-norm MoE model matches the PyTorch reference") {
  ngemb_test::check_against_reference<prenorm_lm<ngemb::device_policy>>(device, "prenorm");
}

TEST_CASE("device: a model saved from device memory loads on the host with the same logits") {
  const ngemb_test::model_golden expected("shortcut");
  auto on_device = shortcut_lm<ngemb::device_policy>::load(device, ngemb_test::model_dir / "shortcut");
  const ngemb_test::temp_folder folder;
  on_device.save(device, folder.path());
  const ngemb::host_policy host;
  auto on_host = shortcut_lm<ngemb::host_policy>::load(host, folder.path());
  const auto every = ngemb::logits_for::every_token;
  const auto device_logits = ngemb_test::run_batch(on_device, device, expected.sequences,
                                                   ngemb_test::start(on_device, 3), every);
  const auto host_logits = ngemb_test::run_batch(on_host, host, expected.sequences, ngemb_test::start(on_host, 3), every);
  REQUIRE(device_logits.size() == host_logits.size());
  for (std::size_t i = 0; i < host_logits.size(); ++i) {
    CHECK(device_logits[i] == doctest::Approx(host_logits[i]).epsilon(1e-4));
  }
}
