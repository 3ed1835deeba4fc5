// The routers on the device: the same fp64 reference and tolerances as tests/moe.cpp, with the logits GEMM in
// cuBLAS and the selection in a kernel.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "embedding_golden.hpp"
#include "ngemb/moe/router.hpp"
#include "ngemb/policy/device_policy.cuh"
#include "router_golden.hpp"

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
