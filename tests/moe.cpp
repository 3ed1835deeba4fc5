// moe/: the top-k routers and the MoE layer against independent fp64 references
// (tests/reference/router_reference.py and moe_reference.py; tolerances in router_golden.hpp and moe_golden.hpp),
// checkpoint round trips, and the errors of bad options, shapes, names and non-finite logits; the host's experts
// side by side on many threads give one thread's outputs bit for bit, and its plan and failures.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "moe_golden.hpp"
#include "ngemb/io/safetensors_reader.hpp"
#include "ngemb/io/safetensors_writer.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/ffn/swiglu.hpp"
#include "ngemb/moe/detail/host_experts.hpp"
#include "ngemb/moe/moe.hpp"
#include "ngemb/moe/router.hpp"
#include "router_golden.hpp"
#include "temp_folder.hpp"

namespace {

// Small thresholds so the tests also run the threaded paths of for_each_n and the GEMMs' splits.
const ngemb::host_policy policy{2, 64};


using ngemb_test::temp_folder;

/// The collection written as a checkpoint and opened again.
ngemb::safetensors_checkpoint round_trip(const ngemb::tensor_collection& tensors, const temp_folder& folder) {
  ngemb::write_safetensors_checkpoint(folder.path(), tensors.tensors(), std::size_t{1} << 30);
  return ngemb::safetensors_checkpoint(folder.path());
}

template <class Layer>
std::vector<float> forward(Layer& layer, std::size_t tokens, const std::vector<float>& x) {
  std::vector<float> y(x.size(), -7.0f);
  layer.forward(policy, tokens, ngemb::view<const float>(x), ngemb::view<float>(y));
  return y;
}

/// A random layer whose routing loads its experts unevenly: expert 0 is in every token's picks (most of the routed
/// rows), experts 7..11 in none (a selection bias of -10 against softmax scores in [0, 1]), and the other picks
/// fall on experts 1..6 and the zero experts by the random logits. H and I are no multiples of a vector width.
struct uneven_layer {
  static constexpr std::int64_t hidden = 24;
  static constexpr std::int64_t width = 20;
  ngemb::router_options options{12, 3, 3, false, 2.0f};
  std::vector<float> classifier;
  std::vector<float> selection_bias;
  std::vector<float> gate;
  std::vector<float> up;
  std::vector<float> down;

  uneven_layer() {
    std::mt19937 random(21);
    std::uniform_real_distribution<float> value(-0.5f, 0.5f);
    const auto fill = [&](std::vector<float>& values, std::size_t size) {
      values.resize(size);
      std::generate(values.begin(), values.end(), [&] { return value(random); });
    };
    const auto matrices = static_cast<std::size_t>(options.routed_experts * hidden * width);
    fill(classifier, static_cast<std::size_t>(options.num_experts() * hidden));
    fill(gate, matrices);
    fill(up, matrices);
    fill(down, matrices);
    selection_bias.assign(static_cast<std::size_t>(options.num_experts()), 0.0f);
    selection_bias[0] = 10.0f;
    std::fill(selection_bias.begin() + 7, selection_bias.begin() + 12, -10.0f);
  }

  template <class Weight>
  [[nodiscard]] ngemb::moe<ngemb::softmax_router<>, Weight> make(const ngemb::host_policy& policy) const {
    const auto weights = [](const std::vector<float>& values) { return ngemb_test::as_weights<Weight>(values); };
    const std::vector<Weight> gate_weights = weights(gate);
    const std::vector<Weight> up_weights = weights(up);
    const std::vector<Weight> down_weights = weights(down);
    return ngemb::moe<ngemb::softmax_router<>, Weight>(
        policy,
        ngemb::softmax_router<>(policy, options, hidden,
                                {.classifier = ngemb::view<const float>(classifier),
                                 .selection_bias = ngemb::view<const float>(selection_bias)}),
        {.hidden = hidden, .expert_width = width, .router = options},
        {.gate = ngemb::view<const Weight>(gate_weights), .up = ngemb::view<const Weight>(up_weights),
         .down = ngemb::view<const Weight>(down_weights)});
  }

  [[nodiscard]] static std::vector<float> input(std::size_t tokens, unsigned seed) {
    std::mt19937 random(seed);
    std::uniform_real_distribution<float> value(-1.0f, 1.0f);
    std::vector<float> x(tokens * static_cast<std::size_t>(hidden));
    std::generate(x.begin(), x.end(), [&] { return value(random); });
    return x;
  }
};

/// Serves allocations from aligned operator new and counts those asked for on another thread than `owner`.
class thread_watching_resource {
 public:
  void* allocate(std::size_t bytes, std::size_t alignment) {
    off_thread += std::this_thread::get_id() != owner ? 1 : 0;
    return ::operator new(bytes, std::align_val_t{alignment});
  }
  void deallocate(void* pointer, std::size_t /*bytes*/, std::size_t alignment) noexcept {
    off_thread += std::this_thread::get_id() != owner ? 1 : 0;
    ::operator delete(pointer, std::align_val_t{alignment});
  }

  std::thread::id owner = std::this_thread::get_id();
  std::atomic<int> off_thread{0};
};

static_assert(ngemb::router<ngemb::softmax_router<>> && ngemb::router<ngemb::sigmoid_router<>>);
static_assert(!ngemb::router<int> && !ngemb::router<ngemb::swiglu<>>);  // an FFN is not a router

}  // namespace

TEST_CASE("routers match the fp64 reference: choices, zero experts, selection bias, ties") {
  for (const auto& c : ngemb_test::router_cases()) {
    const auto run = [&](auto router) {
      const auto k = static_cast<std::size_t>(c.options.top_k);
      std::vector<std::int32_t> chosen(c.tokens() * k, -9);
      std::vector<float> weights(c.tokens() * k, -9.0f);
      router.route(policy, c.tokens(), ngemb::view<const float>(c.x), ngemb::view<std::int32_t>(chosen),
                   ngemb::view<float>(weights));
      c.check(chosen, weights);
      c.check_load(ngemb::routing_load(policy, c.options, ngemb::view<const std::int32_t>(chosen)));
    };
    if (c.softmax()) {
      run(c.make<ngemb::softmax_router<>>(policy));
    } else {
      run(c.make<ngemb::sigmoid_router<>>(policy));
    }
  }
}

TEST_CASE("router errors") {
  const std::vector<float> classifier(6 * 4, 0.25f);
  ngemb::router_options options{4, 2, 3, false, 1.0f};
  SUBCASE("k larger than E+Z") {
    options.top_k = 7;
    CHECK_THROWS_WITH_AS(ngemb::softmax_router<>(policy, options, 4, {.classifier = ngemb::view<const float>(classifier)}),
                         doctest::Contains("top_k = 7 must be in [1, E+Z = 6]"), ngemb::invalid_argument);
  }
  SUBCASE("classifier of the wrong shape") {
    CHECK_THROWS_WITH_AS(ngemb::softmax_router<>(policy, options, 5, {.classifier = ngemb::view<const float>(classifier)}),
                         doctest::Contains("(E+Z) x H = 6 x 5"), ngemb::shape_mismatch);
  }
  SUBCASE("NaN logits name the token and expert") {
    ngemb::softmax_router<> router(policy, options, 4, {.classifier = ngemb::view<const float>(classifier)});
    std::vector<float> x = {1, 2, 3, 4, 1, std::numeric_limits<float>::quiet_NaN(), 0, 0};
    std::vector<std::int32_t> chosen(6);
    std::vector<float> weights(6);
    CHECK_THROWS_WITH_AS(router.route(policy, 2, ngemb::view<const float>(x), ngemb::view<std::int32_t>(chosen),
                                      ngemb::view<float>(weights)),
                         doctest::Contains("router: logits: value nan at row 1, column 0 is not finite"),
                         ngemb::invalid_argument);
    // Deferred: the routing runs memory-safely and the check raises later.
    ngemb::input_checks<ngemb::host_policy> checks(policy);
    router.route_async(policy, 2, ngemb::view<const float>(x), ngemb::view<std::int32_t>(chosen),
                       ngemb::view<float>(weights), checks);
    CHECK_THROWS_AS(checks.raise_if_failed(), ngemb::invalid_argument);
    for (const std::int32_t expert : chosen) {
      CHECK((expert >= 0 && expert < 6));
    }
  }
  SUBCASE("load of indices outside the experts") {
    const std::vector<std::int32_t> chosen = {0, 5, 6, 1};
    CHECK_THROWS_WITH_AS(ngemb::routing_load(policy, options, ngemb::view<const std::int32_t>(chosen)),
                         doctest::Contains("1 chosen indices are outside [0, E+Z = 6)"), ngemb::invalid_argument);
  }
  SUBCASE("outputs of the wrong size") {
    ngemb::softmax_router<> router(policy, options, 4, {.classifier = ngemb::view<const float>(classifier)});
    std::vector<float> x(8, 1.0f);
    std::vector<std::int32_t> chosen(5);
    std::vector<float> weights(6);
    CHECK_THROWS_AS(router.route(policy, 2, ngemb::view<const float>(x), ngemb::view<std::int32_t>(chosen),
                                 ngemb::view<float>(weights)),
                    ngemb::shape_mismatch);
  }
}

TEST_CASE("router save and load round trip through a checkpoint folder") {
  for (const auto& c : ngemb_test::router_cases()) {
    if (!c.softmax()) {
      continue;
    }
    auto original = c.make<ngemb::softmax_router<>>(policy);
    ngemb::tensor_collection tensors;
    original.save(policy, "model.layers.3.mlp.router", tensors);
    CHECK(tensors.size() == 1 + (c.classifier_bias.empty() ? 0 : 1) + (c.selection_bias.empty() ? 0 : 1));
    const temp_folder folder;
    const auto checkpoint = round_trip(tensors, folder);
    auto loaded = ngemb::softmax_router<>::load(policy, checkpoint, "model.layers.3.mlp.router",
                                                {.hidden = c.hidden, .expert_width = 0, .router = c.options});
    const auto k = static_cast<std::size_t>(c.options.top_k);
    std::vector<std::int32_t> chosen(c.tokens() * k);
    std::vector<float> weights(c.tokens() * k);
    loaded.route(policy, c.tokens(), ngemb::view<const float>(c.x), ngemb::view<std::int32_t>(chosen),
                 ngemb::view<float>(weights));
    c.check(chosen, weights);
  }
}

TEST_CASE("moe layers match the fp64 reference: zero experts, biases, softmax and sigmoid, normalisation, bf16") {
  for (const auto& c : ngemb_test::moe_cases()) {
    c.for_each_layer(policy, [&](auto layer) {
      CHECK(layer.hidden() == c.hidden);
      CHECK(layer.expert_width() == c.expert_width);
      CHECK(layer.router().options().top_k == c.options.top_k);
      c.check(forward(layer, c.tokens(), c.x));
      c.check_load(layer.last_routing(policy));
      // A second, smaller batch reuses the grown workspaces.
      const std::vector<float> first_token(c.x.begin(), c.x.begin() + c.hidden);
      const auto y = forward(layer, 1, first_token);
      CHECK(ngemb_test::worst_row_error(y, std::vector<double>(c.y.begin(), c.y.begin() + c.hidden),
                                        static_cast<std::size_t>(c.hidden)) <= ngemb_test::moe_tolerance);
      CHECK(layer.last_routing(policy).assignments() == c.options.top_k);
    });
  }
}

TEST_CASE("moe forward is deterministic across thread counts") {
  const auto c = ngemb_test::moe_cases().front();
  auto serial = c.make<ngemb::softmax_router<>, float>(ngemb::host_policy{1});
  auto threaded = c.make<ngemb::softmax_router<>, float>(policy);
  std::vector<float> one(c.x.size());
  std::vector<float> two(c.x.size());
  serial.forward(ngemb::host_policy{1}, c.tokens(), ngemb::view<const float>(c.x), ngemb::view<float>(one));
  threaded.forward(policy, c.tokens(), ngemb::view<const float>(c.x), ngemb::view<float>(two));
  CHECK(one == two);
}

TEST_CASE("moe save and load round trip under the HF names") {
  for (const auto& c : ngemb_test::moe_cases()) {
    const auto original = c.make<ngemb::sigmoid_router<>, ngemb::bf16>(policy);
    ngemb::tensor_collection tensors;
    original.save(policy, "model.layers.3.mlp", tensors);
    const temp_folder folder;
    const auto checkpoint = round_trip(tensors, folder);
    CHECK(checkpoint.contains("model.layers.3.mlp.router.classifier.weight"));
    CHECK(checkpoint.contains("model.layers.3.mlp.experts." + std::to_string(c.options.routed_experts - 1) +
                              ".down_proj.weight"));
    CHECK(checkpoint.contains("model.layers.3.mlp.router.e_score_correction_bias") == !c.selection_bias.empty());
    auto loaded = ngemb::moe<ngemb::sigmoid_router<>, ngemb::bf16>::load(policy, checkpoint, "model.layers.3.mlp",
                                                                         c.shape());
    auto again = c.make<ngemb::sigmoid_router<>, ngemb::bf16>(policy);
    CHECK(forward(loaded, c.tokens(), c.x) == forward(again, c.tokens(), c.x));
  }
}

TEST_CASE("moe errors") {
  const auto c = ngemb_test::moe_cases().front();  // E = 6, Z = 3, k = 3, H = 16, I = 8
  const std::vector<float> gate(c.gate.begin(), c.gate.end() - 1);
  SUBCASE("expert weights of the wrong shape") {
    CHECK_THROWS_WITH_AS(
        (ngemb::moe<ngemb::softmax_router<>>(policy, c.make_router<ngemb::softmax_router<>>(policy), c.shape(),
                                             {.gate = ngemb::view<const float>(gate),
                                              .up = ngemb::view<const float>(c.up),
                                              .down = ngemb::view<const float>(c.down)})),
        doctest::Contains("moe: gate_proj must hold 6 x 8 x 16 = 768 values, got 767"), ngemb::shape_mismatch);
    ngemb::moe_shape other_k = c.shape();
    other_k.router.top_k = 2;
    CHECK_THROWS_WITH_AS(
        (ngemb::moe<ngemb::softmax_router<>>(policy, c.make_router<ngemb::softmax_router<>>(policy), other_k,
                                             {.gate = ngemb::view<const float>(c.gate),
                                              .up = ngemb::view<const float>(c.up),
                                              .down = ngemb::view<const float>(c.down)})),
        doctest::Contains("moe: the shape's router options (E = 6, Z = 3, k = 2) differ from the router's (E = 6, "
                          "Z = 3, k = 3)"),
        ngemb::invalid_argument);
    CHECK_THROWS_WITH_AS((ngemb::swiglu<>(policy, {.hidden = 16, .intermediate = 8},
                                          {.gate = ngemb::view<const float>(c.gate).subview(0, 128),
                                           .up = ngemb::view<const float>(c.up).subview(0, 128),
                                           .down = ngemb::view<const float>(c.down).subview(0, 127)})),
                         doctest::Contains("swiglu: down_proj must hold 16 x 8 = 128 values, got 127"),
                         ngemb::shape_mismatch);
  }
  SUBCASE("inputs of the wrong size") {
    auto layer = c.make<ngemb::softmax_router<>, float>(policy);
    std::vector<float> y(c.x.size() - 1);
    CHECK_THROWS_WITH_AS(layer.forward(policy, c.tokens(), ngemb::view<const float>(c.x), ngemb::view<float>(y)),
                         doctest::Contains("moe: x and y must hold tokens x H = 13 x 16"), ngemb::shape_mismatch);
  }
  SUBCASE("k larger than E+Z") {
    ngemb::router_options options = c.options;
    options.top_k = 10;
    CHECK_THROWS_WITH_AS(
        (ngemb::softmax_router<>(policy, options, c.hidden, {.classifier = ngemb::view<const float>(c.classifier)})),
        doctest::Contains("top_k = 10 must be in [1, E+Z = 9]"), ngemb::invalid_argument);
  }
  SUBCASE("a missing expert tensor is named") {
    const auto layer = c.make<ngemb::softmax_router<>, float>(policy);
    ngemb::tensor_collection all;
    layer.save(policy, "model.layers.1.mlp", all);
    ngemb::tensor_collection some;
    for (const auto& tensor : all.tensors()) {
      if (tensor.name != "model.layers.1.mlp.experts.4.up_proj.weight") {
        std::vector<float> values(tensor.data.size() / sizeof(float));
        std::memcpy(values.data(), tensor.data.data(), tensor.data.size());
        some.add<float>(policy, tensor.name, tensor.shape, ngemb::view<const float>(values));
      }
    }
    const temp_folder folder;
    const auto checkpoint = round_trip(some, folder);
    CHECK_THROWS_WITH_AS((ngemb::moe<ngemb::softmax_router<>>::load(policy, checkpoint, "model.layers.1.mlp", c.shape())),
                         doctest::Contains("no tensor \"model.layers.1.mlp.experts.4.up_proj.weight\""),
                         ngemb::format_error);
    CHECK_THROWS_WITH_AS((ngemb::moe<ngemb::softmax_router<>>::load(policy, checkpoint, "model.layers.2.mlp", c.shape())),
                         doctest::Contains("no tensor \"model.layers.2.mlp.router.classifier.weight\""),
                         ngemb::format_error);
  }
  SUBCASE("NaN input raises the router's non-finite logits error, now or deferred") {
    auto layer = c.make<ngemb::softmax_router<>, float>(policy);
    std::vector<float> x = c.x;
    x[2 * 16 + 5] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> y(x.size());
    CHECK_THROWS_WITH_AS(layer.forward(policy, c.tokens(), ngemb::view<const float>(x), ngemb::view<float>(y)),
                         doctest::Contains("router: logits: value nan at row 2"), ngemb::invalid_argument);
    ngemb::input_checks<ngemb::host_policy> checks(policy);
    layer.forward_async(policy, c.tokens(), ngemb::view<const float>(x), ngemb::view<float>(y), checks);
    CHECK_THROWS_WITH_AS(checks.raise_if_failed(), doctest::Contains("row 2"), ngemb::invalid_argument);
    CHECK(layer.last_routing(policy).assignments() == static_cast<std::int64_t>(c.tokens()) * c.options.top_k);
  }
}

TEST_CASE("moe loads a checkpoint with transformers' zero-expert gate/up tensors and names them as tolerated") {
  // transformers' save_pretrained writes experts.{e}.{gate_proj,up_proj}.weight for the zero experts E <= e < E+Z.
  for (const auto& c : ngemb_test::moe_cases()) {
    if (c.options.zero_experts == 0) {
      continue;
    }
    CAPTURE(c.name);
    const auto original = c.make<ngemb::softmax_router<>, float>(policy);
    const std::string prefix = "model.layers.0.mlp";
    ngemb::tensor_collection tensors;
    original.save(policy, prefix, tensors);
    CHECK(tensors.tolerated().empty());  // a checkpoint being written leaves them out
    const std::vector<float> unused(static_cast<std::size_t>(c.expert_width * c.hidden), 0.5f);
    std::vector<std::string> zero_names;
    for (int e = c.options.routed_experts; e < c.options.num_experts(); ++e) {
      for (const char* projection : {".gate_proj.weight", ".up_proj.weight"}) {
        zero_names.push_back(prefix + ".experts." + std::to_string(e) + projection);
        tensors.add<float>(policy, zero_names.back(), {c.expert_width, c.hidden}, ngemb::view<const float>(unused));
      }
    }
    const temp_folder folder;
    const auto checkpoint = round_trip(tensors, folder);
    CHECK(checkpoint.contains(zero_names.front()));
    auto loaded = ngemb::moe<ngemb::softmax_router<>, float>::load(policy, checkpoint, prefix, c.shape());
    auto again = c.make<ngemb::softmax_router<>, float>(policy);
    CHECK(forward(loaded, c.tokens(), c.x) == forward(again, c.tokens(), c.x));

    // What a strict loader checks the checkpoint against: the saved names plus the tolerated zero-expert ones.
    ngemb::tensor_collection expected(ngemb::tensor_collection::mode::names_only);
    loaded.save(policy, prefix, expected);
    CHECK(std::vector<std::string>(expected.tolerated().begin(), expected.tolerated().end()) == zero_names);
    for (const auto& entry : expected.entries()) {
      CHECK(std::find(zero_names.begin(), zero_names.end(), entry.name) == zero_names.end());
    }
  }
}

TEST_CASE_TEMPLATE("moe on many threads (experts side by side, one alone) gives one thread's outputs bit for bit", Weight,
                   float, ngemb::bf16) {
  const uneven_layer shape;
  const ngemb::host_policy one{1};
  auto reference = shape.make<Weight>(one);
  // min_elements_per_thread 1 and 64: every expert is worth a thread; 4 threads leave 2 of the 6 side-by-side
  // experts to run alone; {0} (the machine's threads and the default threshold) runs this small layer in turn.
  for (const ngemb::host_policy many : {ngemb::host_policy{8, 1}, ngemb::host_policy{4, 1}, ngemb::host_policy{3, 64},
                                        ngemb::host_policy{0}}) {
    CAPTURE(many.threads);
    auto layer = shape.make<Weight>(many);
    // Large, single-token and middling batches: the workspaces and the workers' arenas grow and are reused; expert
    // 0 gets hundreds of rows, then one, then dozens, and the others from none to dozens.
    for (const std::size_t tokens : {std::size_t{300}, std::size_t{1}, std::size_t{37}, std::size_t{300}}) {
      CAPTURE(tokens);
      const std::vector<float> x = uneven_layer::input(tokens, static_cast<unsigned>(tokens));
      std::vector<float> expected(x.size());
      std::vector<float> got(x.size(), -7.0f);
      reference.forward(one, tokens, ngemb::view<const float>(x), ngemb::view<float>(expected));
      layer.forward(many, tokens, ngemb::view<const float>(x), ngemb::view<float>(got));
      CHECK(got == expected);
      const ngemb::routing_statistics routing = layer.last_routing(many);
      CHECK(routing.load[0] == static_cast<std::int64_t>(tokens));
      CHECK(std::all_of(routing.load.begin() + 7, routing.load.begin() + 12, [](std::int64_t load) { return load == 0; }));
    }
  }
}

TEST_CASE("moe on many threads, once warm, calls the policy's resource only on the caller's thread") {
  const uneven_layer shape;
  thread_watching_resource resource;
  const ngemb::host_policy policy = ngemb::host_policy{4, 1}.with(resource);
  auto layer = shape.make<ngemb::bf16>(policy);
  const std::vector<float> x = uneven_layer::input(300, 5);
  std::vector<float> y(x.size());
  layer.forward(policy, 300, ngemb::view<const float>(x), ngemb::view<float>(y));  // warm: every arena sized
  resource.off_thread = 0;
  for (const std::size_t tokens : {std::size_t{300}, std::size_t{40}}) {
    layer.forward(policy, tokens, ngemb::view<const float>(x).subview(0, tokens * uneven_layer::hidden),
                  ngemb::view<float>(y).subview(0, tokens * uneven_layer::hidden));
  }
  CHECK(resource.off_thread == 0);
}

TEST_CASE("host experts: the plan by work, each active expert once, and a failing expert's exception on the caller") {
  ngemb::detail::host_experts experts;
  // Rows per expert: expert 0 most of them, 2, 3, 5, 6, 7 and 9 a few, 1, 4 and 8 none.
  const std::vector<std::int32_t> rows = {100, 0, 5, 6, 0, 7, 5, 4, 0, 6};
  std::vector<std::int32_t> offsets(rows.size() + 1, 0);
  for (std::size_t e = 0; e < rows.size(); ++e) {
    offsets[e + 1] = offsets[e] + rows[e];
  }
  std::vector<std::atomic<int>> runs(rows.size());
  std::vector<unsigned> threads(rows.size(), 0);
  const auto record = [&](const ngemb::host_policy& expert_policy, std::size_t e) {
    runs[e].fetch_add(1);
    threads[e] = expert_policy.threads;
  };
  const auto run_counts = [&] {
    std::vector<int> counts;
    for (auto& count : runs) {
      counts.push_back(count.exchange(0));
    }
    return counts;
  };
  SUBCASE("worth the threads") {
    experts.run(ngemb::host_policy{4, 1}, offsets.data(), rows.size(), 1000, record);
    CHECK(run_counts() == std::vector<int>{1, 0, 1, 1, 0, 1, 1, 1, 0, 1});
    // Costs (rows + 1): 101 of 140 in all is more than a share of 4 workers: alone, across the 4 threads. The other
    // six side by side on 4 workers, but the 2 smallest (experts 6 and 7) fill no whole round: alone too.
    CHECK(threads == std::vector<unsigned>{4, 0, 1, 1, 0, 1, 4, 4, 0, 1});
  }
  SUBCASE("too little work for a second thread: one after another, each across the policy's threads") {
    experts.run(ngemb::host_policy{4, 16384}, offsets.data(), rows.size(), 10, record);
    CHECK(run_counts() == std::vector<int>{1, 0, 1, 1, 0, 1, 1, 1, 0, 1});
    CHECK(threads == std::vector<unsigned>{4, 0, 4, 4, 0, 4, 4, 4, 0, 4});
  }
  SUBCASE("an exception inside a side-by-side expert is rethrown on the caller, and the next run completes") {
    const auto failing = [&](const ngemb::host_policy& expert_policy, std::size_t e) {
      record(expert_policy, e);
      if (e == 3) {
        throw std::runtime_error("expert 3 failed");
      }
    };
    CHECK_THROWS_WITH_AS(experts.run(ngemb::host_policy{4, 1}, offsets.data(), rows.size(), 1000, failing),
                         "expert 3 failed", std::runtime_error);
    CHECK(runs[3].load() == 1);
    run_counts();
    experts.run(ngemb::host_policy{4, 1}, offsets.data(), rows.size(), 1000, record);
    CHECK(run_counts() == std::vector<int>{1, 0, 1, 1, 0, 1, 1, 1, 0, 1});
  }
}
