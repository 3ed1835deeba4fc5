// ffn/: the dense FFNs. SwiGLU against the independent fp64 reference (tests/reference/moe_reference.py, tolerances
// in moe_golden.hpp) with fp32, bf16 and fp16 weights, its checkpoint round trip, and the feed_forward concept.
// (ngram_gated_ffn is tested with the per-layer embedding that feeds it, in embed.cpp.)
#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

#include "moe_golden.hpp"
#include "ngemb/ffn/feed_forward.hpp"
#include "ngemb/ffn/swiglu.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "temp_folder.hpp"

namespace {

// Small thresholds so the tests also run the threaded paths of for_each_n and the GEMMs' splits.
const ngemb::host_policy policy{2, 64};

template <class Layer>
std::vector<float> forward(Layer& layer, std::size_t tokens, const std::vector<float>& x) {
  std::vector<float> y(x.size(), -7.0f);
  layer.forward(policy, tokens, ngemb::view<const float>(x), ngemb::view<float>(y));
  return y;
}

static_assert(ngemb::feed_forward<ngemb::swiglu<>> && ngemb::feed_forward<ngemb::swiglu<ngemb::bf16>>);
static_assert(!ngemb::feed_forward<int>);

}  // namespace

TEST_CASE("swiglu matches the fp64 reference with fp32, bf16 and fp16 weights") {
  for (const auto& c : ngemb_test::swiglu_cases()) {
    auto f32 = c.make<float>(policy);
    CHECK(f32.hidden() == c.hidden);
    CHECK(f32.intermediate() == c.intermediate);
    c.check(forward(f32, c.tokens(), c.x));
    if (c.bf16_weights()) {
      auto bf16 = c.make<ngemb::bf16>(policy);
      c.check(forward(bf16, c.tokens(), c.x));
      // bf16 values have 8 significant bits, so fp16 (11 bits, range 6e-5 .. 65504) holds these weights exactly.
      auto fp16 = c.make<ngemb::fp16>(policy);
      c.check(forward(fp16, c.tokens(), c.x));
    }
  }
}

TEST_CASE("swiglu save and load round trip, converting the dtype on load") {
  const auto c = ngemb_test::swiglu_cases().back();
  REQUIRE(c.bf16_weights());
  const auto original = c.make<ngemb::bf16>(policy);
  ngemb::tensor_collection tensors;
  original.save(policy, "model.layers.0.mlps.1", tensors);
  const ngemb_test::temp_folder folder;
  ngemb::write_safetensors_checkpoint(folder.path(), tensors.tensors(), std::size_t{1} << 30);
  const ngemb::safetensors_checkpoint checkpoint(folder.path());
  CHECK(checkpoint.info("model.layers.0.mlps.1.down_proj.weight").dtype == "BF16");
  auto as_f32 = ngemb::swiglu<>::load(policy, checkpoint, "model.layers.0.mlps.1",
                                      {.hidden = c.hidden, .intermediate = c.intermediate});
  c.check(forward(as_f32, c.tokens(), c.x));
  CHECK_THROWS_WITH_AS(ngemb::swiglu<>::load(policy, checkpoint, "model.layers.0.mlps.1",
                                             {.hidden = c.hidden, .intermediate = c.intermediate + 1}),
                       doctest::Contains("gate_proj.weight\" has shape [16, 24], expected [17, 24]"),
                       ngemb::format_error);
}
