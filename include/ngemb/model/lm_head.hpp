#pragma once
// The model's output: the final RMSNorm, then logits = W_lm norm(x) over the vocabulary (one GEMM per step). W_lm
// is stored as Weight (fp32 by default; bf16 or fp16 halve the largest read of a decode step), accumulated in fp32.
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/model/detail/row_checks.hpp"
#include "ngemb/model/detail/workspace.hpp"
#include "ngemb/model/rms_norm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/weight_matrix.hpp"

namespace ngemb {

namespace detail {

/// `prefix.name`, or `name` alone under the empty prefix (the checkpoint's root).
inline std::string join_name(const std::string& prefix, const char* name) {
  return prefix.empty() ? std::string(name) : prefix + "." + name;
}

}  // namespace detail

template <class Policy = host_policy, class Weight = float>
class lm_head {
 public:
  using policy_type = Policy;
  using weight_type = Weight;

  struct shape {
    std::int64_t hidden;      ///< H
    std::int64_t vocab_size;  ///< V
    float eps;                ///< of the final norm
  };

  /// `weight` [V x H] is a host array (converted to Weight); H is the norm's width.
  lm_head(const Policy& policy, rms_norm<Policy> norm, std::int64_t vocab_size, view<const float> weight)
      : lm_head(policy, std::move(norm), vocab_size, weight, 0) {}

  /// As above from weights in another element type (a checkpoint's bf16 read as stored).
  template <readable_element S>
    requires(!std::is_same_v<S, float>)
  lm_head(const Policy& policy, rms_norm<Policy> norm, std::int64_t vocab_size, view<const S> weight)
      : lm_head(policy, std::move(norm), vocab_size, weight, 0) {}

  /// `model.norm.weight` [H] and `lm_head.weight` [V, H] under `prefix` (empty: the checkpoint's root, as in HF
  /// checkpoints).
  static lm_head load(const Policy& policy, const checkpoint& source, const std::string& prefix, const shape& dims) {
    auto norm = rms_norm<Policy>::load(policy, source, detail::join_name(prefix, "model.norm"), {dims.hidden, dims.eps});
    const std::int64_t weight_shape[] = {dims.vocab_size, dims.hidden};
    const auto weight = read_tensor_as<Weight>(source, detail::join_name(prefix, "lm_head.weight"), weight_shape);
    return lm_head(policy, std::move(norm), dims.vocab_size, view<const Weight>(weight));
  }

  void save(const Policy& policy, const std::string& prefix, tensor_collection& tensors) const {
    norm_.save(policy, detail::join_name(prefix, "model.norm"), tensors);
    weight_.save(policy, detail::join_name(prefix, "lm_head.weight"), tensors);
  }

  /// x [tokens x H] and logits [tokens x V] in policy memory; x is left unchanged.
  void forward(const Policy& policy, std::size_t tokens, view<const float> x, view<float> logits) {
    detail::require_rows("lm_head: x", tokens, norm_.hidden(), x.size());
    const view<float> normed = detail::workspace(policy, normed_, tokens * static_cast<std::size_t>(norm_.hidden()));
    normalize(policy, tokens, x, normed);
    forward_normed(policy, tokens, normed, logits);
  }

  /// The final norm alone: normed [tokens x H] = norm(x) (the rows an MTP module reads as h_t).
  void normalize(const Policy& policy, std::size_t tokens, view<const float> x, view<float> normed) const {
    detail::require_rows("lm_head: x", tokens, norm_.hidden(), x.size());
    detail::require_rows("lm_head: normed rows", tokens, norm_.hidden(), normed.size());
    norm_.forward(policy, tokens, x, normed);
  }

  /// The projection alone, for rows already normed (the final norm's output, or an MTP module's): logits
  /// [tokens x V] = W_lm normed.
  void forward_normed(const Policy& policy, std::size_t tokens, view<const float> normed, view<float> logits) const {
    detail::require_rows("lm_head: normed rows", tokens, norm_.hidden(), normed.size());
    detail::require_rows("lm_head: logits", tokens, vocab_size_, logits.size());
    weight_.multiply(policy, tokens, normed, logits);
  }

  [[nodiscard]] std::int64_t vocab_size() const { return vocab_size_; }
  [[nodiscard]] std::int64_t hidden() const { return norm_.hidden(); }

 private:
  template <readable_element S>
  lm_head(const Policy& policy, rms_norm<Policy> norm, std::int64_t vocab_size, view<const S> weight, int /*tag*/)
      : norm_(std::move(norm)), vocab_size_(vocab_size) {
    if (vocab_size < 1) {
      throw invalid_argument("lm_head: vocab_size must be >= 1, got " + std::to_string(vocab_size));
    }
    detail::require_rows("lm_head: the weight [V x H]", static_cast<std::size_t>(vocab_size), norm_.hidden(),
                         weight.size());
    weight_ = weight_matrix<Weight, Policy>(policy, vocab_size, norm_.hidden(), weight);
  }

  rms_norm<Policy> norm_;
  std::int64_t vocab_size_;
  weight_matrix<Weight, Policy> weight_;
  typename Policy::template buffer<float> normed_;
};

}  // namespace ngemb
