#pragma once
// The model's output: the final RMSNorm, then logits = W_lm norm(x) over the vocabulary (one GEMM per step).
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/detail/row_checks.hpp"
#include "ngemb/model/detail/workspace.hpp"
#include "ngemb/model/rms_norm.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

template <class Policy = host_policy>
class lm_head {
 public:
  using policy_type = Policy;

  /// `weight` [V x H] is a host array; H is the norm's width.
  lm_head(const Policy& policy, rms_norm<Policy> norm, std::int64_t vocab, view<const float> weight)
      : norm_(std::move(norm)), vocab_(vocab) {
    if (vocab < 1) {
      throw invalid_argument("lm_head: vocab must be >= 1, got " + std::to_string(vocab));
    }
    detail::require_rows("lm_head: the weight [V x H]", static_cast<std::size_t>(vocab), norm_.hidden(),
                         weight.size());
    weight_ = upload(policy, weight);
  }

  /// "model.norm.weight" [H] and "lm_head.weight" [V, H].
  static lm_head load(const Policy& policy, const checkpoint& checkpoint, std::int64_t hidden,
                      std::int64_t vocab, float eps) {
    auto norm = rms_norm<Policy>::load(policy, checkpoint, "model.norm.weight", hidden, eps);
    const std::int64_t shape[] = {vocab, hidden};
    const auto weight = read_tensor_as<float>(checkpoint, "lm_head.weight", shape);
    return lm_head(policy, std::move(norm), vocab, view<const float>(weight));
  }

  void save(const Policy& policy, tensor_collection& tensors) const {
    norm_.save(policy, "model.norm.weight", tensors);
    tensors.add<float>(policy, "lm_head.weight", {vocab_, norm_.hidden()}, weight_.as_view());
  }

  /// x [tokens x H] and logits [tokens x V] in policy memory; x is left unchanged.
  void forward(const Policy& policy, std::size_t tokens, view<const float> x, view<float> logits) {
    detail::require_rows("lm_head: x", tokens, norm_.hidden(), x.size());
    detail::require_rows("lm_head: logits", tokens, vocab_, logits.size());
    const auto hidden = static_cast<std::size_t>(norm_.hidden());
    const view<float> normed = detail::workspace(policy, normed_, tokens * hidden);
    norm_.forward(policy, tokens, x, normed);
    gemm_nt(policy, tokens, static_cast<std::size_t>(vocab_), hidden, view<const float>(normed), weight_.as_view(),
            logits);
  }

  [[nodiscard]] std::int64_t vocab() const { return vocab_; }
  [[nodiscard]] std::int64_t hidden() const { return norm_.hidden(); }

 private:
  rms_norm<Policy> norm_;
  std::int64_t vocab_;
  typename Policy::template buffer<float> weight_;
  typename Policy::template buffer<float> normed_;
};

}  // namespace ngemb
