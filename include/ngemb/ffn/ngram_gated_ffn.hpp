#pragma once
// The FFN a per-layer n-gram embedding (PLNE, embed/per_layer_ngram_embedding.hpp) feeds:
//   y [n x H] = W_d ( SiLU(W_a x) * e ),   W_a [F x H], W_d [H x F],
// with e [n x F] the layer's n-gram embedding. Checkpoint names under the prefix "model.layers.{l}.ngram_ffn"
// (an ngemb convention; the released LongCat has no PLNE): `{prefix}.gate_proj.weight` [F, H] (W_a) and
// `{prefix}.down_proj.weight` [H, F] (W_d).
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/macros.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/embed/detail/embedding_pipeline.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/gemm.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

namespace detail {

/// g = SiLU(g) * e, elementwise; SiLU(z) = z / (1 + exp(-z)).
template <class Acc>
struct gate_op {
  Acc* gate;
  const Acc* embedding;

  NGEMB_HD void operator()(std::size_t index) const {
    const Acc z = gate[index];
    Acc sigmoid;
    if constexpr (std::is_same_v<Acc, float>) {
      sigmoid = 1.0f / (1.0f + ::expf(-z));
    } else {
      sigmoid = 1.0 / (1.0 + ::exp(-z));
    }
    gate[index] = z * sigmoid * embedding[index];
  }
};

}  // namespace detail

template <gemm_scalar Acc = float, class Policy = host_policy>
class ngram_gated_ffn {
 public:
  using accumulator = Acc;
  using policy_type = Policy;

  /// H, the model width, and F, the width of the layer's n-gram embedding.
  struct shape {
    std::int64_t hidden = 0;
    std::int64_t width = 0;
  };

  /// Host arrays: W_a [F x H] and W_d [H x F], row-major, in any readable element type (the constructor checks W:
  /// clang 14 crashes on a constrained member class template named inside the class).
  template <class W>
  struct weights {
    view<const W> gate;
    view<const W> down;
  };

  template <readable_element W>
  ngram_gated_ffn(const Policy& policy, const shape& dims, const weights<W>& host)
      : hidden_(dims.hidden), width_(dims.width) {
    if (hidden_ < 1 || width_ < 1) {
      throw invalid_argument("ngram_gated_ffn: H and F must be >= 1, got " + std::to_string(hidden_) + " and " +
                             std::to_string(width_));
    }
    gate_ = widened(policy, "gate (W_a)", host.gate);
    down_ = widened(policy, "down (W_d)", host.down);
  }

  /// Reads `{prefix}.gate_proj.weight` [F, H] and `{prefix}.down_proj.weight` [H, F] (any float dtype).
  static ngram_gated_ffn load(const Policy& policy, const checkpoint& source, const std::string& prefix,
                              const shape& dims) {
    const std::int64_t gate_shape[] = {dims.width, dims.hidden};
    const std::int64_t down_shape[] = {dims.hidden, dims.width};
    const auto gate = read_tensor_as<double>(source, prefix + ".gate_proj.weight", gate_shape);
    const auto down = read_tensor_as<double>(source, prefix + ".down_proj.weight", down_shape);
    return ngram_gated_ffn(policy, dims,
                           weights<double>{.gate = view<const double>(gate), .down = view<const double>(down)});
  }

  /// Writes the names load() reads, in fp32.
  void save(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    out.add<float>(host_policy{}, prefix + ".gate_proj.weight", {width_, hidden_}, narrowed(policy, gate_));
    out.add<float>(host_policy{}, prefix + ".down_proj.weight", {hidden_, width_}, narrowed(policy, down_));
  }

  [[nodiscard]] std::int64_t hidden_size() const { return hidden_; }
  [[nodiscard]] std::int64_t width() const { return width_; }

  /// y [count x H] from x [count x H] and the layer's n-gram embedding e [count x F], all in policy memory.
  void forward(const Policy& policy, std::size_t count, view<const Acc> x, view<const Acc> e, view<Acc> y) {
    detail::check_output_size("ngram_gated_ffn: x", count, hidden_, x.size());
    detail::check_output_size("ngram_gated_ffn: e", count, width_, e.size());
    detail::check_output_size("ngram_gated_ffn: y", count, hidden_, y.size());
    const std::size_t width = static_cast<std::size_t>(width_);
    const std::size_t hidden = static_cast<std::size_t>(hidden_);
    if (gated_.size() < count * width) {
      gated_ = typename Policy::template buffer<Acc>(policy, count * width);
    }
    const view<Acc> gated = gated_.as_view().subview(0, count * width);
    gemm_nt(policy, count, width, hidden, x, gate_.as_view(), gated);
    for_each_n(policy, count * width, detail::gate_op<Acc>{gated.data(), e.data()});
    gemm_nt(policy, count, hidden, width, view<const Acc>(gated.data(), gated.size()), down_.as_view(), y);
  }

 private:
  template <class W>
  typename Policy::template buffer<Acc> widened(const Policy& policy, const char* what, view<const W> values) const {
    if (values.size() != static_cast<std::size_t>(hidden_ * width_)) {
      throw shape_mismatch(std::string("ngram_gated_ffn: ") + what + " has " + std::to_string(values.size()) +
                           " elements, expected " + std::to_string(hidden_) + " x " + std::to_string(width_));
    }
    std::vector<Acc> converted(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      converted[i] = detail::convert<Acc>(values[i]);
    }
    return upload(policy, view<const Acc>(converted));
  }

  /// A weight copied to the host in fp32, as save() writes it.
  static std::vector<float> narrowed(const Policy& policy, const typename Policy::template buffer<Acc>& weight) {
    std::vector<Acc> host(weight.size());
    copy_to_host(policy, weight.as_view(), view<Acc>(host));
    std::vector<float> values(host.size());
    for (std::size_t i = 0; i < host.size(); ++i) {
      values[i] = detail::convert<float>(host[i]);
    }
    return values;
  }

  std::int64_t hidden_;
  std::int64_t width_;
  typename Policy::template buffer<Acc> gate_;
  typename Policy::template buffer<Acc> down_;
  typename Policy::template buffer<Acc> gated_;
};

}  // namespace ngemb
