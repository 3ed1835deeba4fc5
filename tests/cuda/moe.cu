// moe/ on the device: the routers, SwiGLU and the MoE layer against the same fp64 references and tolerances as
// tests/moe.cpp (router_golden.hpp, moe_golden.hpp), host-vs-device agreement of the layer on the same weights,
// and the device primitives it adds: the mixed-precision gemm_nt (both its kernels, dense and strided B) and the CUB
// sort_pairs.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "embedding_golden.hpp"
#include "moe_golden.hpp"
#include "ngemb/ffn/swiglu.hpp"
#include "ngemb/moe/moe.hpp"
#include "ngemb/moe/router.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "router_golden.hpp"

namespace {

template <class Layer, class Policy>
std::vector<float> forward(Layer& layer, const Policy& policy, std::size_t tokens, const std::vector<float>& x) {
  const auto input = ngemb_test::to_policy(policy, x);
  auto output = ngemb_test::to_policy(policy, std::vector<float>(x.size(), -7.0f));
  layer.forward(policy, tokens, input.as_view(), output.as_view());
  return ngemb_test::to_host(policy, ngemb::view<const float>(output.as_view()));
}

}  // namespace

TEST_CASE("device routers match the fp64 reference") {
  const ngemb::device_policy policy{};
  for (const auto& c : ngemb_test::router_cases()) {
    const auto k = static_cast<std::size_t>(c.options.top_k);
    const auto x = ngemb_test::to_policy(policy, c.x);
    ngemb::device_buffer<std::int32_t> chosen(policy, c.tokens() * k);
    ngemb::device_buffer<float> weights(policy, c.tokens() * k);
    const auto run = [&](auto router) {
      router.route(policy, c.tokens(), x.as_view(), chosen.as_view(), weights.as_view());
      c.check(ngemb_test::to_host(policy, ngemb::view<const std::int32_t>(chosen.as_view())),
              ngemb_test::to_host(policy, ngemb::view<const float>(weights.as_view())));
      c.check_load(ngemb::routing_load(policy, c.options, ngemb::view<const std::int32_t>(chosen.as_view())));
    };
    if (c.softmax()) {
      run(c.make<ngemb::softmax_router<ngemb::device_policy>>(policy));
    } else {
      run(c.make<ngemb::sigmoid_router<ngemb::device_policy>>(policy));
    }
  }
}

TEST_CASE("device mixed-precision gemm_nt matches an fp64 product: warp kernel and widen + cuBLAS paths") {
  const ngemb::device_policy policy{};
  // {m, n, k, ldb}: m <= 8: the warp kernel, vectorised (k and ldb % 8 == 0) or not; m > 8: widened weights and
  // cuBLAS; ldb > k: B's rows a stride apart (a block of W_cat's columns).
  for (const auto& dims : {std::array<std::size_t, 4>{1, 300, 704, 704}, {8, 257, 129, 129}, {3, 33, 8, 8},
                           {9, 64, 500, 500}, {70, 513, 33, 33}, {4, 5, 0, 0}, {1, 300, 96, 104},
                           {3, 40, 64, 67}, {20, 70, 129, 140}}) {
    const std::size_t m = dims[0];  // named copies: clang 14 cannot capture structured bindings (INFO does)
    const std::size_t n = dims[1];
    const std::size_t k = dims[2];
    const std::size_t ldb = dims[3];
    std::mt19937 random(static_cast<unsigned>(m * 7919 + n * 31 + k));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> a(m * k);
    std::vector<ngemb::bf16> b(k == 0 ? 0 : (n - 1) * ldb + k);
    std::generate(a.begin(), a.end(), [&] { return normal(random); });
    std::generate(b.begin(), b.end(), [&] { return ngemb::bf16(normal(random)); });
    const auto device_a = ngemb_test::to_policy(policy, a);
    const auto device_b = ngemb_test::to_policy(policy, b);
    auto device_c = ngemb_test::to_policy(policy, std::vector<float>(m * n, -7.0f));
    if (ldb == k) {
      ngemb::gemm_nt(policy, m, n, k, device_a.as_view(), device_b.as_view(), device_c.as_view());
    } else {
      ngemb::gemm_nt(policy, m, n, k, device_a.as_view(), device_b.as_view(), ldb, device_c.as_view());
    }
    const auto c = ngemb_test::to_host(policy, ngemb::view<const float>(device_c.as_view()));
    double worst = 0.0;
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        double want = 0.0;
        for (std::size_t l = 0; l < k; ++l) {
          want += static_cast<double>(a[i * k + l]) * static_cast<double>(ngemb::to_float(b[j * ldb + l]));
        }
        worst = std::max(worst, std::abs(c[i * n + j] - want));
      }
    }
    INFO("m = " << m << ", n = " << n << ", k = " << k << ", ldb = " << ldb << ": worst error " << worst);
    CHECK(worst <= 1e-5 * std::sqrt(static_cast<double>(std::max<std::size_t>(k, 1))));  // as tests/policy.cpp
  }
}

TEST_CASE("device sort_pairs is a stable sort by key") {
  const ngemb::device_policy policy{};
  const std::vector<std::int32_t> keys = {3, 1, 3, 0, 1, 3, 2, 0};
  const std::vector<std::int32_t> values = {0, 1, 2, 3, 4, 5, 6, 7};
  const auto device_keys = ngemb_test::to_policy(policy, keys);
  const auto device_values = ngemb_test::to_policy(policy, values);
  ngemb::device_buffer<std::int32_t> sorted_keys(policy, keys.size());
  ngemb::device_buffer<std::int32_t> sorted_values(policy, keys.size());
  ngemb::device_buffer<std::byte> temp;
  ngemb::sort_pairs(policy, device_keys.as_view(), device_values.as_view(), sorted_keys.as_view(),
                    sorted_values.as_view(), 2, temp);
  CHECK(ngemb_test::to_host(policy, ngemb::view<const std::int32_t>(sorted_keys.as_view())) ==
        std::vector<std::int32_t>{0, 0, 1, 1, 2, 3, 3, 3});
  CHECK(ngemb_test::to_host(policy, ngemb::view<const std::int32_t>(sorted_values.as_view())) ==
        std::vector<std::int32_t>{3, 7, 1, 4, 6, 0, 2, 5});
}

TEST_CASE("device swiglu matches the fp64 reference with fp32 and bf16 weights") {
  const ngemb::device_policy policy{};
  for (const auto& c : ngemb_test::swiglu_cases()) {
    auto f32 = c.make<float>(policy);
    c.check(forward(f32, policy, c.tokens(), c.x));
    if (c.bf16_weights()) {
      auto bf16 = c.make<ngemb::bf16>(policy);
      c.check(forward(bf16, policy, c.tokens(), c.x));
    }
  }
}

TEST_CASE("device moe layers match the fp64 reference and the host layer") {
  const ngemb::device_policy policy{};
  const ngemb::host_policy host{2, 64};
  for (const auto& c : ngemb_test::moe_cases()) {
    c.for_each_layer(policy, [&](auto layer) {
      const auto y = forward(layer, policy, c.tokens(), c.x);
      c.check(y);
      c.check_load(layer.last_routing(policy));
      using layer_type = decltype(layer);
      using host_router = ngemb::topk_router<std::conditional_t<std::is_same_v<typename layer_type::router_type,
                                                                               ngemb::softmax_router<ngemb::device_policy>>,
                                                                ngemb::softmax_scoring, ngemb::sigmoid_scoring>>;
      auto host_layer = c.make<host_router, typename layer_type::weight_type>(host);
      const auto host_y = forward(host_layer, host, c.tokens(), c.x);
      std::vector<double> widened(host_y.begin(), host_y.end());
      CHECK(ngemb_test::worst_row_error(y, widened, static_cast<std::size_t>(c.hidden)) <= ngemb_test::moe_tolerance);
      CHECK(host_layer.last_routing(host).load == layer.last_routing(policy).load);
    });
  }
}

TEST_CASE("device moe: NaN input raises the router's error, now or deferred") {
  const ngemb::device_policy policy{};
  const auto c = ngemb_test::moe_cases().front();
  auto layer = c.make<ngemb::softmax_router<ngemb::device_policy>, float>(policy);
  std::vector<float> x = c.x;
  x[2 * static_cast<std::size_t>(c.hidden) + 5] = std::numeric_limits<float>::quiet_NaN();
  const auto input = ngemb_test::to_policy(policy, x);
  ngemb::device_buffer<float> y(policy, x.size());
  CHECK_THROWS_WITH_AS(layer.forward(policy, c.tokens(), input.as_view(), y.as_view()),
                       doctest::Contains("router: logits: value nan at row 2"), ngemb::invalid_argument);
  ngemb::input_checks<ngemb::device_policy> checks(policy);
  layer.forward_async(policy, c.tokens(), input.as_view(), y.as_view(), checks);
  CHECK_THROWS_AS(checks.raise_if_failed(), ngemb::invalid_argument);
}
