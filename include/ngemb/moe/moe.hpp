#pragma once
// A LongCat-Flash MoE layer (SPEC §6): y = sum over the top-k picks of w * FFN_e(x) for routed experts and
// zero(w, x) for zero-computation experts. The forward routes, dispatches the (token, pick) pairs by expert
// (sort_pairs: std::stable_sort on the host, CUB radix sort on a device), gathers each expert's rows contiguously,
// runs its SwiGLU FFN as batched GEMMs (mixed precision for bf16/fp16 weights; on the host the active experts side by
// side across the threads, detail/host_experts.hpp) and combines the outputs per token in pick order. Experts without
// tokens and zero experts cost no GEMM.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/input_checks.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/ffn/detail/swiglu_rows.hpp"
#include "ngemb/ffn/feed_forward.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/moe/detail/dispatch.hpp"
#include "ngemb/moe/detail/host_experts.hpp"
#include "ngemb/moe/router.hpp"
#include "ngemb/moe/zero_experts.hpp"
#include "ngemb/policy/detail/sort_pairs.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

namespace detail {

/// The router's policy, or host_policy when it has none (so the static_assert below is the first error shown).
template <class Router>
struct router_policy {
  using type = host_policy;
};
template <class Router>
  requires requires { typename Router::policy_type; }
struct router_policy<Router> {
  using type = typename Router::policy_type;
};

/// What a MoE layer keeps for running its experts under a policy other than host_policy: nothing.
struct no_host_experts {};

}  // namespace detail

template <class Router, class Weight = float, class ZeroExperts = zero_experts>
class moe {
  static_assert(detail::check_router<Router>());  // its static_asserts name what the router lacks
  static_assert(storage_type<Weight>, "moe<Router, Weight, ZeroExperts>: Weight must be float, ngemb::bf16 or ngemb::fp16");

 public:
  using policy_type = typename detail::router_policy<Router>::type;
  using router_type = Router;
  using weight_type = Weight;
  using shape = moe_shape;

  /// Expert weights as host arrays in the PyTorch layout, expert after expert: gate and up [E x I x H], down
  /// [E x H x I], with E = router.options().routed_experts and I = expert_width.
  struct expert_weights {
    view<const Weight> gate;
    view<const Weight> up;
    view<const Weight> down;
  };

  /// `dims.router` must be the router's options.
  moe(const policy_type& policy, Router router, const shape& dims, const expert_weights& experts)
      : router_(std::move(router)), hidden_(dims.hidden), expert_width_(dims.expert_width) {
    if (router_.options() != dims.router) {
      throw invalid_argument("moe: the shape's router options (E = " + std::to_string(dims.router.routed_experts) +
                             ", Z = " + std::to_string(dims.router.zero_experts) + ", k = " +
                             std::to_string(dims.router.top_k) + ") differ from the router's (E = " +
                             std::to_string(routed_experts()) + ", Z = " +
                             std::to_string(router_.options().zero_experts) + ", k = " +
                             std::to_string(router_.options().top_k) + ")");
    }
    detail::check_ffn_weights("moe", routed_experts(), dims.hidden, dims.expert_width, experts.gate.size(),
                              experts.up.size(), experts.down.size());
    gate_up_ = detail::stack_gate_up(policy, static_cast<std::size_t>(routed_experts()), matrix_size(), experts.gate,
                                     experts.up);
    down_ = upload(policy, experts.down);
  }

  /// The router at `{prefix}.router` (Router::load, with this layer's shape) and the experts at
  /// `{prefix}.experts.{e}.{gate_proj,up_proj,down_proj}.weight`; the HF prefix is `model.layers.{l}.mlp`.
  /// transformers' save_pretrained also writes `{prefix}.experts.{e}.{gate_proj,up_proj}.weight` for the zero
  /// experts E <= e < E+Z (its packed gate_up tensor spans all E+Z experts; no down_proj): they are never read, and
  /// save() names them as tolerated so a strict loader accepts them. Their shape is not checked: an identity
  /// expert's output cannot depend on them, and transformers itself never reads them in its forward.
  static moe load(const policy_type& policy, const checkpoint& source, const std::string& prefix, const shape& dims) {
    Router router = Router::load(policy, source, prefix + ".router", dims);
    const auto experts = static_cast<std::size_t>(dims.router.routed_experts);
    const std::int64_t in_shape[] = {dims.expert_width, dims.hidden};
    const std::int64_t out_shape[] = {dims.hidden, dims.expert_width};
    for (std::size_t e = 0; e < experts; ++e) {  // every shape before allocating what the shapes ask for
      const std::string name = prefix + ".experts." + std::to_string(e);
      check_float_tensor(source, name + ".gate_proj.weight", in_shape);
      check_float_tensor(source, name + ".up_proj.weight", in_shape);
      check_float_tensor(source, name + ".down_proj.weight", out_shape);
    }
    const auto matrix = static_cast<std::size_t>(dims.hidden * dims.expert_width);
    std::vector<Weight> gate(experts * matrix);
    std::vector<Weight> up(experts * matrix);
    std::vector<Weight> down(experts * matrix);
    for (std::size_t e = 0; e < experts; ++e) {
      const std::string name = prefix + ".experts." + std::to_string(e);
      read_tensor_into<Weight>(source, name + ".gate_proj.weight", in_shape, std::span(gate).subspan(e * matrix, matrix));
      read_tensor_into<Weight>(source, name + ".up_proj.weight", in_shape, std::span(up).subspan(e * matrix, matrix));
      read_tensor_into<Weight>(source, name + ".down_proj.weight", out_shape, std::span(down).subspan(e * matrix, matrix));
    }
    return moe(policy, std::move(router), dims,
               {.gate = view<const Weight>(gate), .up = view<const Weight>(up), .down = view<const Weight>(down)});
  }

  /// Adds the router's and the experts' tensors under the names load() reads (experts in Weight's dtype), and the
  /// zero experts' gate/up names transformers writes as tolerated (see load()).
  void save(const policy_type& policy, const std::string& prefix, tensor_collection& out) const {
    router_.save(policy, prefix + ".router", out);
    for (int e = routed_experts(); e < router_.options().num_experts(); ++e) {
      const std::string name = prefix + ".experts." + std::to_string(e);
      out.tolerate(name + ".gate_proj.weight");
      out.tolerate(name + ".up_proj.weight");
    }
    const std::size_t matrix = matrix_size();
    const view<const Weight> gate_up = gate_up_.as_view();
    const view<const Weight> down = down_.as_view();
    for (std::size_t e = 0; e < static_cast<std::size_t>(routed_experts()); ++e) {
      const std::string name = prefix + ".experts." + std::to_string(e);
      out.add<Weight>(policy, name + ".gate_proj.weight", {expert_width_, hidden_}, gate_up.subview(2 * e * matrix, matrix));
      out.add<Weight>(policy, name + ".up_proj.weight", {expert_width_, hidden_},
                      gate_up.subview((2 * e + 1) * matrix, matrix));
      out.add<Weight>(policy, name + ".down_proj.weight", {hidden_, expert_width_}, down.subview(e * matrix, matrix));
    }
  }

  /// y = MoE(x) for x, y [tokens x H] in policy memory (y overwritten). Non-finite router logits raise
  /// invalid_argument. On a device the per-expert row counts are read back once (one synchronisation) to size the
  /// expert GEMMs.
  void forward(const policy_type& policy, std::size_t tokens, view<const float> x, view<float> y) {
    run(policy, tokens, x, y, nullptr);
  }

  /// forward() with the router's finite check queued in `checks` for the caller to raise (the forward then runs
  /// memory-safely on whatever x holds).
  void forward_async(const policy_type& policy, std::size_t tokens, view<const float> x, view<float> y,
                     input_checks<policy_type>& checks) {
    run(policy, tokens, x, y, &checks);
  }

  /// Expert load of the last forward's routing (empty counts before any forward).
  [[nodiscard]] routing_statistics last_routing(const policy_type& policy) const {
    const std::size_t pairs = last_tokens_ * static_cast<std::size_t>(router_.options().top_k);
    return routing_load(policy, router_.options(), view<const std::int32_t>(chosen_.data(), pairs));
  }

  [[nodiscard]] const Router& router() const { return router_; }
  [[nodiscard]] std::int64_t hidden() const { return hidden_; }
  [[nodiscard]] std::int64_t expert_width() const { return expert_width_; }

 private:
  void run(const policy_type& policy, std::size_t tokens, view<const float> x, view<float> y,
           input_checks<policy_type>* deferred) {
    const auto hidden = static_cast<std::size_t>(hidden_);
    const auto width = static_cast<std::size_t>(expert_width_);
    const auto top_k = static_cast<std::size_t>(router_.options().top_k);
    const auto experts = static_cast<std::size_t>(router_.options().num_experts());
    if (x.size() != tokens * hidden || y.size() != tokens * hidden) {
      throw shape_mismatch("moe: x and y must hold tokens x H = " + std::to_string(tokens) + " x " +
                           std::to_string(hidden) + " values, got " + std::to_string(x.size()) + " and " +
                           std::to_string(y.size()));
    }
    const std::size_t pairs = tokens * top_k;
    if (pairs > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
      throw invalid_argument("moe: tokens x k = " + std::to_string(pairs) + " (token, pick) pairs exceed 2^31 - 1");
    }
    for (auto* buffer : {&chosen_, &sorted_experts_, &pair_ids_, &order_, &position_}) {
      detail::reserve(policy, *buffer, pairs);
    }
    detail::reserve(policy, weights_, pairs);
    detail::reserve(policy, offsets_, experts + 1);
    last_tokens_ = 0;  // a failed route leaves no statistics
    if (deferred != nullptr) {
      router_.route_async(policy, tokens, x, chosen_.as_view().subview(0, pairs), weights_.as_view().subview(0, pairs),
                          *deferred);
    } else {
      router_.route(policy, tokens, x, chosen_.as_view().subview(0, pairs), weights_.as_view().subview(0, pairs));
    }
    last_tokens_ = tokens;

    // Dispatch: group the pairs by expert; offsets_[e] .. offsets_[e + 1] are expert e's sorted positions.
    for_each_n(policy, pairs, detail::iota_op{pair_ids_.data()});
    sort_pairs(policy, view<const std::int32_t>(chosen_.data(), pairs), view<const std::int32_t>(pair_ids_.data(), pairs),
               sorted_experts_.as_view().subview(0, pairs), order_.as_view().subview(0, pairs),
               std::max(1, static_cast<int>(std::bit_width(experts - 1))), sort_temp_);
    for_each_n(policy, experts + 1, detail::bucket_offsets_op{sorted_experts_.data(), pairs, offsets_.data()});
    for_each_n(policy, pairs, detail::scatter_positions_op{order_.data(), position_.data()});
    offsets_host_.resize(experts + 1);
    copy_to_host(policy, view<const std::int32_t>(offsets_.data(), experts + 1), view<std::int32_t>(offsets_host_));

    const auto routed_pairs = static_cast<std::size_t>(offsets_host_[static_cast<std::size_t>(routed_experts())]);
    detail::reserve(policy, gathered_, routed_pairs * hidden);
    detail::reserve(policy, gate_up_out_, routed_pairs * 2 * width);
    detail::reserve(policy, activated_, routed_pairs * width);
    detail::reserve(policy, expert_out_, routed_pairs * hidden);
    for_each_n(policy, routed_pairs * hidden,
               detail::gather_pair_rows_op{x.data(), order_.data(), top_k, hidden, gathered_.data()});
    const std::size_t matrix = matrix_size();
    // Expert e's rows of the workspaces are its own: experts may run in any order, or side by side.
    const auto run_expert = [&](const auto& expert_policy, std::size_t e) {
      const auto first = static_cast<std::size_t>(offsets_host_[e]);
      const std::size_t rows = static_cast<std::size_t>(offsets_host_[e + 1]) - first;
      detail::swiglu_rows(expert_policy, rows, hidden, width,
                          view<const float>(gathered_.data() + first * hidden, rows * hidden),
                          view<const Weight>(gate_up_.data() + 2 * e * matrix, 2 * matrix),
                          view<const Weight>(down_.data() + e * matrix, matrix),
                          gate_up_out_.as_view().subview(first * 2 * width, rows * 2 * width),
                          activated_.as_view().subview(first * width, rows * width),
                          expert_out_.as_view().subview(first * hidden, rows * hidden));
    };
    if constexpr (std::is_same_v<policy_type, host_policy>) {
      host_experts_.run(policy, offsets_host_.data(), static_cast<std::size_t>(routed_experts()), 3 * hidden * width,
                        run_expert);
    } else {
      for (std::size_t e = 0; e < static_cast<std::size_t>(routed_experts()); ++e) {
        if (offsets_host_[e + 1] > offsets_host_[e]) {
          run_expert(policy, e);
        }
      }
    }
    for_each_n(policy, tokens * hidden,
               detail::combine_picks_op<ZeroExperts>{x.data(), chosen_.data(), weights_.data(), position_.data(),
                                                     expert_out_.data(), top_k, router_.options().routed_experts,
                                                     hidden, ZeroExperts{}, y.data()});
  }

  [[nodiscard]] int routed_experts() const { return router_.options().routed_experts; }
  [[nodiscard]] std::size_t matrix_size() const { return static_cast<std::size_t>(hidden_ * expert_width_); }

  Router router_;
  std::int64_t hidden_;
  std::int64_t expert_width_;
  typename policy_type::template buffer<Weight> gate_up_;  ///< [E x 2I x H]: per expert W_gate then W_up
  typename policy_type::template buffer<Weight> down_;     ///< [E x H x I]
  // Workspaces, grown to the largest batch seen.
  typename policy_type::template buffer<std::int32_t> chosen_;          ///< [tokens x k] expert per pair
  typename policy_type::template buffer<float> weights_;                ///< [tokens x k] router weight per pair
  typename policy_type::template buffer<std::int32_t> pair_ids_;        ///< 0 .. pairs - 1
  typename policy_type::template buffer<std::int32_t> sorted_experts_;  ///< the chosen experts, sorted
  typename policy_type::template buffer<std::int32_t> order_;           ///< pair at each sorted position
  typename policy_type::template buffer<std::int32_t> position_;        ///< sorted position of each pair
  typename policy_type::template buffer<std::int32_t> offsets_;         ///< [E+Z+1] first sorted position per expert
  typename policy_type::template buffer<std::byte> sort_temp_;
  typename policy_type::template buffer<float> gathered_;     ///< [routed pairs x H]
  typename policy_type::template buffer<float> gate_up_out_;  ///< [routed pairs x 2I]
  typename policy_type::template buffer<float> activated_;    ///< [routed pairs x I]
  typename policy_type::template buffer<float> expert_out_;   ///< [routed pairs x H]
  std::vector<std::int32_t> offsets_host_;
  std::size_t last_tokens_ = 0;
  /// The host runs the active experts side by side (detail/host_experts.hpp); other policies one after another, each
  /// GEMM across the whole device.
  [[no_unique_address]] std::conditional_t<std::is_same_v<policy_type, host_policy>, detail::host_experts,
                                           detail::no_host_experts> host_experts_;
};

/// A MoE FFN: a feed_forward that routes (router() returns its router).
template <class F>
concept moe_feed_forward = feed_forward<F> && requires(const F& layer) { layer.router(); };

namespace detail {

/// One static_assert per member of moe_feed_forward, so a failure names what is missing.
template <class F>
constexpr bool check_moe_feed_forward() {
  static_assert(check_feed_forward<F>());
  static_assert(requires(const F& layer) { layer.router(); },
                "moe_feed_forward: the MoE type must have router() const returning its router");
  return true;
}

}  // namespace detail

}  // namespace ngemb
