#pragma once
// Top-k routers of LongCat-Flash MoE layers (SPEC §6): logits z = W_r x over E routed and Z zero-computation
// experts, scores s = softmax(z) or sigmoid(z), selection by s + b (the aux-loss-free balancing bias changes which
// experts are chosen, never their weights), the chosen keep s_e (optionally renormalised over the k chosen), times
// routed_scaling_factor. Everything runs in fp32 whatever the model's dtype. Ties go to the lowest expert index, on
// host and device alike, because the selection is one shared element operation.
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/error.hpp"
#include "ngemb/core/input_checks.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

/// s = softmax(z) over all E+Z experts (max-subtracted).
struct softmax_scoring {
  NGEMB_HD static void score(float* row, int experts) {
    float largest = row[0];
    for (int e = 1; e < experts; ++e) {
      largest = row[e] > largest ? row[e] : largest;
    }
    float sum = 0.0f;
    for (int e = 0; e < experts; ++e) {
      row[e] = ::expf(row[e] - largest);
      sum += row[e];
    }
    for (int e = 0; e < experts; ++e) {
      row[e] /= sum;
    }
  }
};

/// s = sigmoid(z), expert by expert.
struct sigmoid_scoring {
  NGEMB_HD static void score(float* row, int experts) {
    for (int e = 0; e < experts; ++e) {
      row[e] = 1.0f / (1.0f + ::expf(-row[e]));
    }
  }
};

struct router_options {
  int routed_experts = 0;  ///< E
  int zero_experts = 0;    ///< Z: identity experts with indices E..E+Z-1
  int top_k = 0;           ///< k
  bool normalize_top_k = false;        ///< `norm_topk_prob`: chosen weights divided by their sum
  float routed_scaling_factor = 1.0f;  ///< applied after the optional renormalisation

  [[nodiscard]] int num_experts() const { return routed_experts + zero_experts; }
  bool operator==(const router_options&) const = default;

  void validate() const {
    const auto fail = [](const std::string& message) { throw invalid_argument("router: " + message); };
    if (routed_experts < 1 || zero_experts < 0) {
      fail("needs >= 1 routed expert and >= 0 zero experts, got E = " + std::to_string(routed_experts) +
           ", Z = " + std::to_string(zero_experts));
    }
    if (top_k < 1 || top_k > num_experts()) {
      fail("top_k = " + std::to_string(top_k) + " must be in [1, E+Z = " + std::to_string(num_experts()) + "]");
    }
    if (!(routed_scaling_factor > 0.0f)) {
      fail("routed_scaling_factor must be > 0, got " + std::to_string(routed_scaling_factor));
    }
  }
};

/// The sizes of a MoE layer: H in and out, each routed expert's width I, and its router's options. A router is loaded
/// with its layer's shape and reads what it needs of it.
struct moe_shape {
  std::int64_t hidden;
  std::int64_t expert_width;
  router_options router;
};

namespace detail {

/// One token: scores its logits row in place, picks the k largest s_e + b_e (ties: lowest index) and writes
/// their indices and weights. The i-th pick is the largest candidate ordered strictly after the (i-1)-th in
/// (score descending, index ascending), so no per-token memory is needed for the picked set.
template <class Scoring>
struct route_token_op {
  float* scores;               ///< [tokens x experts], logits in, scores out
  const float* selection_bias;  ///< [experts] or null
  int experts;
  int top_k;
  bool normalize;
  float scale;
  std::int32_t* chosen;        ///< [tokens x k]
  float* weights;              ///< [tokens x k]

  NGEMB_HD void operator()(std::size_t token) const {
    float* row = scores + token * static_cast<std::size_t>(experts);
    Scoring::score(row, experts);
    std::int32_t* token_chosen = chosen + token * static_cast<std::size_t>(top_k);
    float* token_weights = weights + token * static_cast<std::size_t>(top_k);
    float previous_key = 0.0f;
    int previous = -1;
    float sum = 0.0f;
    for (int pick = 0; pick < top_k; ++pick) {
      int best = -1;
      float best_key = 0.0f;
      for (int e = 0; e < experts; ++e) {
        const float key = row[e] + (selection_bias != nullptr ? selection_bias[e] : 0.0f);
        const bool after_previous = previous < 0 || key < previous_key || (key == previous_key && e > previous);
        if (after_previous && (best < 0 || key > best_key)) {
          best = e;
          best_key = key;
        }
      }
      if (best < 0) {
        best = 0;  // only NaN scores are left: the finite check reports them; stay inside the row meanwhile
      }
      token_chosen[pick] = best;
      token_weights[pick] = row[best];
      sum += row[best];
      previous = best;
      previous_key = best_key;
    }
    for (int pick = 0; pick < top_k; ++pick) {
      token_weights[pick] = (normalize ? token_weights[pick] / sum : token_weights[pick]) * scale;
    }
  }
};

/// logits += bias, row by row.
struct add_row_bias_op {
  float* rows;
  const float* bias;
  std::size_t width;

  NGEMB_HD void operator()(std::size_t index) const { rows[index] += bias[index % width]; }
};

}  // namespace detail

/// A top-k router. `Scoring` is softmax_scoring or sigmoid_scoring.
template <class Scoring, class Policy = host_policy>
class topk_router {
 public:
  using policy_type = Policy;

  using shape = moe_shape;

  /// Host arrays: W_r [E+Z x H] (the classifier), and the optional classifier bias and selection bias [E+Z] (empty:
  /// none).
  struct weights {
    view<const float> classifier;
    view<const float> classifier_bias = {};
    view<const float> selection_bias = {};
  };

  topk_router(const Policy& policy, const router_options& options, std::int64_t hidden, const weights& parameters)
      : options_(options), hidden_(hidden) {
    options_.validate();
    const auto experts = static_cast<std::size_t>(options_.num_experts());
    if (hidden < 1 || parameters.classifier.size() != experts * static_cast<std::size_t>(hidden)) {
      throw shape_mismatch("router: the classifier must hold (E+Z) x H = " + std::to_string(experts) + " x " +
                           std::to_string(hidden) + " values, got " + std::to_string(parameters.classifier.size()));
    }
    const auto check_bias = [experts](view<const float> bias, const char* name) {
      if (!bias.empty() && bias.size() != experts) {
        throw shape_mismatch(std::string("router: the ") + name + " must hold E+Z = " + std::to_string(experts) +
                             " values, got " + std::to_string(bias.size()));
      }
    };
    check_bias(parameters.classifier_bias, "classifier bias");
    check_bias(parameters.selection_bias, "selection bias");
    classifier_ = upload(policy, parameters.classifier);
    classifier_bias_ = upload(policy, parameters.classifier_bias);
    selection_bias_ = upload(policy, parameters.selection_bias);
  }

  /// `{prefix}.classifier.weight` [E+Z, H], and `{prefix}.classifier.bias` and `{prefix}.e_score_correction_bias`
  /// [E+Z] when the checkpoint has them; the HF prefix is `model.layers.{l}.mlp.router`. Reads dims.hidden and
  /// dims.router.
  static topk_router load(const Policy& policy, const checkpoint& source, const std::string& prefix,
                          const shape& dims) {
    const std::int64_t experts = dims.router.num_experts();
    const std::int64_t matrix_shape[] = {experts, dims.hidden};
    const std::int64_t vector_shape[] = {experts};
    const auto classifier = read_tensor_as<float>(source, prefix + ".classifier.weight", matrix_shape);
    const auto optional = [&](const std::string& name) {
      return source.contains(name) ? read_tensor_as<float>(source, name, vector_shape) : std::vector<float>{};
    };
    const auto classifier_bias = optional(prefix + ".classifier.bias");
    const auto selection_bias = optional(prefix + ".e_score_correction_bias");
    return topk_router(policy, dims.router, dims.hidden,
                       {.classifier = view<const float>(classifier),
                        .classifier_bias = view<const float>(classifier_bias),
                        .selection_bias = view<const float>(selection_bias)});
  }

  /// Adds the classifier and the biases it has (F32) under the names load() reads.
  void save(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    const std::int64_t experts = options_.num_experts();
    out.add<float>(policy, prefix + ".classifier.weight", {experts, hidden_}, classifier_.as_view());
    if (classifier_bias_.size() != 0) {
      out.add<float>(policy, prefix + ".classifier.bias", {experts}, classifier_bias_.as_view());
    }
    if (selection_bias_.size() != 0) {
      out.add<float>(policy, prefix + ".e_score_correction_bias", {experts}, selection_bias_.as_view());
    }
  }

  [[nodiscard]] const router_options& options() const { return options_; }

  /// Routes x [tokens x H] (policy memory): chosen [tokens x k] expert indices (>= E: a zero expert) and their
  /// weights [tokens x k]. Non-finite logits raise invalid_argument naming the token and expert, before the
  /// selection runs (on a device: one synchronisation).
  void route(const Policy& policy, std::size_t tokens, view<const float> x, view<std::int32_t> chosen,
             view<float> weights) {
    route_checked(policy, tokens, x, chosen, weights, nullptr);
  }

  /// route() without the synchronisation: the finite check of the logits is queued in `checks` for the caller to
  /// raise; the selection meanwhile runs memory-safely on whatever the logits hold.
  void route_async(const Policy& policy, std::size_t tokens, view<const float> x, view<std::int32_t> chosen,
                   view<float> weights, input_checks<Policy>& checks) {
    route_checked(policy, tokens, x, chosen, weights, &checks);
  }

 private:
  void route_checked(const Policy& policy, std::size_t tokens, view<const float> x, view<std::int32_t> chosen,
                     view<float> weights, input_checks<Policy>* deferred) {
    const auto experts = static_cast<std::size_t>(options_.num_experts());
    const auto k = static_cast<std::size_t>(options_.top_k);
    if (chosen.size() != tokens * k || weights.size() != tokens * k) {
      throw shape_mismatch("router: chosen and weights must hold tokens x k = " + std::to_string(tokens) + " x " +
                           std::to_string(k) + " values, got " + std::to_string(chosen.size()) + " and " +
                           std::to_string(weights.size()));
    }
    if (scores_.size() < tokens * experts) {
      scores_ = typename Policy::template buffer<float>(policy, tokens * experts);
    }
    const view<float> scores = scores_.as_view().subview(0, tokens * experts);
    gemm_nt(policy, tokens, experts, static_cast<std::size_t>(hidden_), x, classifier_.as_view(), scores);
    if (classifier_bias_.size() != 0) {
      for_each_n(policy, scores.size(), detail::add_row_bias_op{scores.data(), classifier_bias_.data(), experts});
    }
    detail::checks_or_deferred<Policy> checks(policy, deferred);
    checks->finite(view<const float>(scores.data(), scores.size()), experts, "router: logits");
    checks.before_launch();
    for_each_n(policy, tokens,
               detail::route_token_op<Scoring>{scores.data(),
                                               selection_bias_.size() != 0 ? selection_bias_.data() : nullptr,
                                               options_.num_experts(), options_.top_k, options_.normalize_top_k,
                                               options_.routed_scaling_factor, chosen.data(), weights.data()});
  }

  router_options options_;
  std::int64_t hidden_;
  typename Policy::template buffer<float> classifier_;
  typename Policy::template buffer<float> classifier_bias_;
  typename Policy::template buffer<float> selection_bias_;
  typename Policy::template buffer<float> scores_;
};

namespace detail {

template <class R>
concept names_router_types = requires {
  typename R::policy_type;
  typename R::shape;
};

template <class R>
concept has_router_options = requires(const R& router) {
  { router.options() } -> std::convertible_to<const router_options&>;
};

template <class R>
concept loads_router = names_router_types<R> &&
    requires(const typename R::policy_type& policy, const checkpoint& source, const std::string& prefix,
             const typename R::shape& dims) {
      { R::load(policy, source, prefix, dims) } -> std::same_as<R>;
    };

template <class R>
concept saves_router = names_router_types<R> &&
    requires(const R& router, const typename R::policy_type& policy, const std::string& prefix, tensor_collection& out) {
      router.save(policy, prefix, out);
    };

template <class R>
concept routes_tokens = names_router_types<R> &&
    requires(R& router, const typename R::policy_type& policy, std::size_t tokens, view<const float> x,
             view<std::int32_t> chosen, view<float> weights, input_checks<typename R::policy_type>& checks) {
      router.route(policy, tokens, x, chosen, weights);
      router.route_async(policy, tokens, x, chosen, weights, checks);
    };

}  // namespace detail

/// What moe<Router, ...> needs of a router: policy_type, shape (moe_shape, the layer's), options(), static
/// load(policy, const checkpoint&, prefix, const shape&), save(policy, prefix, tensor_collection&), and route() and
/// route_async() with the signatures of topk_router's (chosen experts >= E are zero experts).
template <class R>
concept router = detail::names_router_types<R> && detail::has_router_options<R> && detail::loads_router<R> &&
                 detail::saves_router<R> && detail::routes_tokens<R>;

namespace detail {

/// One static_assert per member of router, so a failure names what is missing.
template <class R>
constexpr bool check_router() {
  static_assert(requires { typename R::policy_type; }, "router: the router type must name its policy (policy_type)");
  static_assert(requires { typename R::shape; },
                "router: the router type must name its shape (using shape = ngemb::moe_shape)");
  static_assert(has_router_options<R>, "router: the router type must have options() returning const router_options&");
  static_assert(loads_router<R>,
                "router: the router type must have static load(policy, const checkpoint&, prefix, const shape&) "
                "returning it");
  static_assert(saves_router<R>, "router: the router type must have save(policy, prefix, tensor_collection&) const");
  static_assert(routes_tokens<R>,
                "router: the router type must have route(policy, tokens, x, chosen, weights) and "
                "route_async(policy, tokens, x, chosen, weights, input_checks&)");
  return true;
}

}  // namespace detail

/// What a user watches of a router: how many (token, pick) assignments each expert got, and the share that went
/// to zero-computation experts (their FFN cost is saved).
struct routing_statistics {
  int routed_experts = 0;
  std::vector<std::int64_t> load;  ///< [E+Z] assignments per expert; zero experts are E..E+Z-1

  [[nodiscard]] std::int64_t assignments() const {
    std::int64_t total = 0;
    for (const std::int64_t count : load) {
      total += count;
    }
    return total;
  }
  [[nodiscard]] double zero_share() const {
    std::int64_t zero = 0;
    for (std::size_t e = static_cast<std::size_t>(routed_experts); e < load.size(); ++e) {
      zero += load[e];
    }
    const std::int64_t total = assignments();
    return total == 0 ? 0.0 : static_cast<double>(zero) / static_cast<double>(total);
  }
};

namespace detail {

/// counts[chosen[i]] += 1; an index outside [0, experts) counts in the extra last slot.
struct count_assignments_op {
  const std::int32_t* chosen;
  unsigned long long* counts;
  int experts;

  NGEMB_HD void operator()(std::size_t i) const {
    const std::int32_t expert = chosen[i];
    unsigned long long* slot = counts + (expert >= 0 && expert < experts ? expert : experts);
#if NGEMB_IN_DEVICE_CODE
    atomicAdd(slot, 1ull);
#else
    std::atomic_ref<unsigned long long>(*slot).fetch_add(1, std::memory_order_relaxed);
#endif
  }
};

struct zero_counts_op {
  unsigned long long* counts;
  NGEMB_HD void operator()(std::size_t i) const { counts[i] = 0; }
};

}  // namespace detail

/// Load per expert of a router's `chosen` output ([tokens x k] in policy memory). Throws invalid_argument when an
/// index is outside [0, E+Z).
template <class Policy>
routing_statistics routing_load(const Policy& policy, const router_options& options, view<const std::int32_t> chosen) {
  const int experts = options.num_experts();
  typename Policy::template buffer<unsigned long long> counts(policy, static_cast<std::size_t>(experts) + 1);
  for_each_n(policy, counts.size(), detail::zero_counts_op{counts.data()});
  for_each_n(policy, chosen.size(), detail::count_assignments_op{chosen.data(), counts.data(), experts});
  std::vector<unsigned long long> host(counts.size());
  copy_to_host(policy, view<const unsigned long long>(counts.data(), counts.size()), view<unsigned long long>(host));
  if (host.back() != 0) {
    throw invalid_argument("routing_load: " + std::to_string(host.back()) + " chosen indices are outside [0, E+Z = " +
                           std::to_string(experts) + ")");
  }
  routing_statistics statistics;
  statistics.routed_experts = options.routed_experts;
  statistics.load.assign(host.begin(), host.end() - 1);
  return statistics;
}

template <class Policy = host_policy>
using softmax_router = topk_router<softmax_scoring, Policy>;
template <class Policy = host_policy>
using sigmoid_router = topk_router<sigmoid_scoring, Policy>;

}  // namespace ngemb
