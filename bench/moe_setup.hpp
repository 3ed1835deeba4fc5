#pragma once
// What the host (moe.cpp) and device (moe_device.cu) MoE benchmarks share: the LongCat-Flash-Lite layer shape, its
// random weights, the naive baseline, the batches, and the floor's byte accounting.
//
// Layer: H = 3072, E = 256 routed + Z = 128 zero experts, k = 12, expert width 1024, bf16 expert weights
// (4.8 GB), softmax router with a random selection bias, routed_scaling_factor 6. Weights and inputs are
// pseudo-random (a counter hash, so filling gigabytes takes seconds), never zero; the router's logits have unit
// variance, so the load spreads over the experts the way a trained router's does on varied text.
// Naive baseline: what a straightforward port does, a loop over tokens and their chosen experts, each routed pick
// running that expert's SwiGLU on one row (gemm_nt with m = 1, the same mixed-precision kernels as the library):
// an expert chosen by several tokens is read once per token.
// Floor: every distinct routed expert the batch chose read once (3 x I x H bf16 weights each) at the memory
// bandwidth measured in the same run.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/ffn/detail/swiglu_rows.hpp"
#include "ngemb/moe/moe.hpp"
#include "ngemb/moe/router.hpp"

namespace ngemb_bench {

inline constexpr std::int64_t moe_hidden = 3072;
inline constexpr std::int64_t moe_width = 1024;

inline ngemb::router_options lite_router_options() {
  ngemb::router_options options;
  options.routed_experts = 256;
  options.zero_experts = 128;
  options.top_k = 12;
  options.normalize_top_k = false;
  options.routed_scaling_factor = 6.0f;
  return options;
}

/// A uniform value in [-1, 1) from a counter: splitmix64 of (seed, index).
NGEMB_HD inline float noise(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed * 0x9e3779b97f4a7c15ull + index + 0x632be59bd9b4e5bbull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/// values[i] = scale * noise(seed, i), as T (uniform with standard deviation scale / sqrt(3)).
template <class T>
struct fill_noise_op {
  T* values;
  std::uint64_t seed;
  float scale;

  NGEMB_HD void operator()(std::size_t i) const { values[i] = T(scale * noise(seed, i)); }
};

/// The layer's parameters as host arrays (what moe's constructor takes).
struct lite_weights {
  std::vector<ngemb::bf16> gate;
  std::vector<ngemb::bf16> up;
  std::vector<ngemb::bf16> down;
  std::vector<float> classifier;
  std::vector<float> selection_bias;

  explicit lite_weights(const ngemb::host_policy& policy) {
    const auto options = lite_router_options();
    const auto matrix = static_cast<std::size_t>(moe_hidden * moe_width);
    const auto experts = static_cast<std::size_t>(options.routed_experts);
    const auto fill = [&policy](auto& values, std::size_t size, std::uint64_t seed, float scale) {
      using value_type = typename std::remove_reference_t<decltype(values)>::value_type;
      values.resize(size);
      ngemb::for_each_n(policy, size, fill_noise_op<value_type>{values.data(), seed, scale});
    };
    // Uniform in [-a, a] has standard deviation a / sqrt(3): sqrt(3 / fan_in) keeps activations of order one.
    fill(gate, experts * matrix, 1, std::sqrt(3.0f / moe_hidden));
    fill(up, experts * matrix, 2, std::sqrt(3.0f / moe_hidden));
    fill(down, experts * matrix, 3, std::sqrt(3.0f / moe_width));
    fill(classifier, static_cast<std::size_t>(options.num_experts() * moe_hidden), 4, std::sqrt(3.0f / moe_hidden));
    fill(selection_bias, static_cast<std::size_t>(options.num_experts()), 5, 1e-3f);
  }

  template <class Policy>
  [[nodiscard]] ngemb::softmax_router<Policy> router(const Policy& policy) const {
    return ngemb::softmax_router<Policy>(policy, lite_router_options(), moe_hidden,
                                         {.classifier = ngemb::view<const float>(classifier),
                                          .selection_bias = ngemb::view<const float>(selection_bias)});
  }

  template <class Policy>
  [[nodiscard]] ngemb::moe<ngemb::softmax_router<Policy>, ngemb::bf16> layer(const Policy& policy) const {
    return ngemb::moe<ngemb::softmax_router<Policy>, ngemb::bf16>(
        policy, router(policy), {.hidden = moe_hidden, .expert_width = moe_width, .router = lite_router_options()},
        {.gate = ngemb::view<const ngemb::bf16>(gate), .up = ngemb::view<const ngemb::bf16>(up),
         .down = ngemb::view<const ngemb::bf16>(down)});
  }
};

/// y[i] += weight * source[i] over one row.
struct axpy_op {
  float weight;
  const float* source;
  float* y;

  NGEMB_HD void operator()(std::size_t i) const { y[i] += weight * source[i]; }
};

struct zero_op {
  float* values;
  NGEMB_HD void operator()(std::size_t i) const { values[i] = 0.0f; }
};

/// gate[i] = SiLU(gate[i]) * up[i], the naive path's own activation.
struct naive_silu_mul_op {
  float* gate;
  const float* up;

  NGEMB_HD void operator()(std::size_t i) const { gate[i] = gate[i] / (1.0f + ::expf(-gate[i])) * up[i]; }
};

/// The naive baseline (see the top): the host arrays' layout in policy memory (views: on the host the very arrays
/// the layer was built from), the router's choices read back once, then per (token, routed pick) the expert's
/// gate, up and down products on that token's row.
template <class Policy>
class naive_moe {
 public:
  naive_moe(const Policy& policy, ngemb::softmax_router<Policy> router, ngemb::view<const ngemb::bf16> gate,
            ngemb::view<const ngemb::bf16> up, ngemb::view<const ngemb::bf16> down)
      : router_(std::move(router)), gate_(gate), up_(up), down_(down), gate_out_(policy, moe_width),
        up_out_(policy, moe_width), expert_out_(policy, moe_hidden) {}

  void forward(const Policy& policy, std::size_t tokens, ngemb::view<const float> x, ngemb::view<float> y) {
    const auto options = router_.options();
    const auto k = static_cast<std::size_t>(options.top_k);
    const auto hidden = static_cast<std::size_t>(moe_hidden);
    const auto width = static_cast<std::size_t>(moe_width);
    const std::size_t matrix = hidden * width;
    ngemb::detail::reserve(policy, chosen_, tokens * k);
    ngemb::detail::reserve(policy, weights_, tokens * k);
    router_.route(policy, tokens, x, chosen_.as_view().subview(0, tokens * k), weights_.as_view().subview(0, tokens * k));
    std::vector<std::int32_t> chosen(tokens * k);
    std::vector<float> weights(tokens * k);
    copy_to_host(policy, ngemb::view<const std::int32_t>(chosen_.data(), tokens * k), ngemb::view<std::int32_t>(chosen));
    copy_to_host(policy, ngemb::view<const float>(weights_.data(), tokens * k), ngemb::view<float>(weights));
    ngemb::for_each_n(policy, y.size(), zero_op{y.data()});
    for (std::size_t token = 0; token < tokens; ++token) {
      const ngemb::view<const float> row = x.subview(token * hidden, hidden);
      float* out = y.data() + token * hidden;
      for (std::size_t pick = token * k; pick < (token + 1) * k; ++pick) {
        const auto expert = static_cast<std::size_t>(chosen[pick]);
        if (chosen[pick] >= options.routed_experts) {
          ngemb::for_each_n(policy, hidden, axpy_op{weights[pick], row.data(), out});
          continue;
        }
        ngemb::gemm_nt(policy, 1, width, hidden, row, gate_.subview(expert * matrix, matrix), gate_out_.as_view());
        ngemb::gemm_nt(policy, 1, width, hidden, row, up_.subview(expert * matrix, matrix), up_out_.as_view());
        ngemb::for_each_n(policy, width, naive_silu_mul_op{gate_out_.data(), up_out_.data()});
        ngemb::gemm_nt(policy, 1, hidden, width, ngemb::view<const float>(gate_out_.as_view()),
                       down_.subview(expert * matrix, matrix), expert_out_.as_view());
        ngemb::for_each_n(policy, hidden, axpy_op{weights[pick], expert_out_.data(), out});
      }
    }
  }

 private:
  ngemb::softmax_router<Policy> router_;
  ngemb::view<const ngemb::bf16> gate_;  ///< [E x I x H]
  ngemb::view<const ngemb::bf16> up_;    ///< [E x I x H]
  ngemb::view<const ngemb::bf16> down_;  ///< [E x H x I]
  typename Policy::template buffer<std::int32_t> chosen_;
  typename Policy::template buffer<float> weights_;
  typename Policy::template buffer<float> gate_out_;
  typename Policy::template buffer<float> up_out_;
  typename Policy::template buffer<float> expert_out_;
};

struct moe_batch {
  const char* name;
  std::size_t tokens;
};

/// Bytes the floor reads: the distinct routed experts of the last routing, each 3 x I x H bf16 weights.
inline double distinct_expert_bytes(const ngemb::routing_statistics& statistics) {
  std::size_t distinct = 0;
  for (int e = 0; e < statistics.routed_experts; ++e) {
    distinct += statistics.load[static_cast<std::size_t>(e)] > 0 ? 1 : 0;
  }
  return static_cast<double>(distinct) * 3.0 * static_cast<double>(moe_hidden * moe_width) * sizeof(ngemb::bf16);
}

/// The expert FFNs' flops of the last routing: 2 x 3 x I x H per routed (token, pick) pair.
inline double expert_flops(const ngemb::routing_statistics& statistics) {
  std::int64_t routed_pairs = 0;
  for (int e = 0; e < statistics.routed_experts; ++e) {
    routed_pairs += statistics.load[static_cast<std::size_t>(e)];
  }
  return static_cast<double>(routed_pairs) * 6.0 * static_cast<double>(moe_hidden * moe_width);
}

}  // namespace ngemb_bench
