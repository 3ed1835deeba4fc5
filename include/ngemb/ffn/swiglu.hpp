#pragma once
// The dense SwiGLU FFN of LongCat-Flash (SPEC §6; HF `LongcatFlashMLP`): y = W_down (SiLU(W_gate x) * (W_up x)),
// weights in fp32, bf16 or fp16, activations and accumulation in fp32 (mixed-precision gemm_nt for bf16/fp16).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ngemb/core/dtype.hpp"
#include "ngemb/core/error.hpp"
#include "ngemb/core/views.hpp"
#include "ngemb/ffn/detail/swiglu_rows.hpp"
#include "ngemb/ffn/feed_forward.hpp"
#include "ngemb/io/checkpoint.hpp"
#include "ngemb/io/read_tensor.hpp"
#include "ngemb/io/tensor_collection.hpp"
#include "ngemb/policy/host_policy.hpp"
#include "ngemb/policy/upload.hpp"

namespace ngemb {

template <class Weight = float, class Policy = host_policy>
class swiglu {
  static_assert(storage_type<Weight>, "swiglu<Weight, Policy>: Weight must be float, ngemb::bf16 or ngemb::fp16");

 public:
  using policy_type = Policy;
  using weight_type = Weight;
  using shape = ffn_shape;

  /// Host arrays in the PyTorch layout: gate and up [I x H], down [H x I].
  struct weights {
    view<const Weight> gate;
    view<const Weight> up;
    view<const Weight> down;
  };

  swiglu(const Policy& policy, const shape& dims, const weights& parameters)
      : hidden_(dims.hidden), intermediate_(dims.intermediate) {
    detail::check_ffn_weights("swiglu", 1, dims.hidden, dims.intermediate, parameters.gate.size(),
                              parameters.up.size(), parameters.down.size());
    gate_up_ = detail::stack_gate_up(policy, 1, matrix_size(), parameters.gate, parameters.up);
    down_ = upload(policy, parameters.down);
  }

  /// `{prefix}.gate_proj.weight`, `{prefix}.up_proj.weight` [I, H] and `{prefix}.down_proj.weight` [H, I], in any
  /// float dtype (converted to Weight).
  static swiglu load(const Policy& policy, const checkpoint& source, const std::string& prefix, const shape& dims) {
    const std::int64_t in_shape[] = {dims.intermediate, dims.hidden};
    const std::int64_t out_shape[] = {dims.hidden, dims.intermediate};
    const auto gate = read_tensor_as<Weight>(source, prefix + ".gate_proj.weight", in_shape);
    const auto up = read_tensor_as<Weight>(source, prefix + ".up_proj.weight", in_shape);
    const auto down = read_tensor_as<Weight>(source, prefix + ".down_proj.weight", out_shape);
    return swiglu(policy, dims, {.gate = view<const Weight>(gate), .up = view<const Weight>(up),
                                 .down = view<const Weight>(down)});
  }

  /// Adds the three weights under the names load() reads, in Weight's dtype.
  void save(const Policy& policy, const std::string& prefix, tensor_collection& out) const {
    const view<const Weight> gate_up = gate_up_.as_view();
    out.add<Weight>(policy, prefix + ".gate_proj.weight", {intermediate_, hidden_}, gate_up.subview(0, matrix_size()));
    out.add<Weight>(policy, prefix + ".up_proj.weight", {intermediate_, hidden_},
                    gate_up.subview(matrix_size(), matrix_size()));
    out.add<Weight>(policy, prefix + ".down_proj.weight", {hidden_, intermediate_}, down_.as_view());
  }

  /// y = FFN(x) for x, y [tokens x H] in policy memory (y overwritten).
  void forward(const Policy& policy, std::size_t tokens, view<const float> x, view<float> y) {
    const auto hidden = static_cast<std::size_t>(hidden_);
    const auto intermediate = static_cast<std::size_t>(intermediate_);
    if (x.size() != tokens * hidden || y.size() != tokens * hidden) {
      throw shape_mismatch("swiglu: x and y must hold tokens x H = " + std::to_string(tokens) + " x " +
                           std::to_string(hidden) + " values, got " + std::to_string(x.size()) + " and " +
                           std::to_string(y.size()));
    }
    detail::reserve(policy, gate_up_out_, tokens * 2 * intermediate);
    detail::reserve(policy, activated_, tokens * intermediate);
    detail::swiglu_rows(policy, tokens, hidden, intermediate, x, view<const Weight>(gate_up_.as_view()),
                        view<const Weight>(down_.as_view()), gate_up_out_.as_view().subview(0, tokens * 2 * intermediate),
                        activated_.as_view().subview(0, tokens * intermediate), y);
  }

  [[nodiscard]] std::int64_t hidden() const { return hidden_; }
  [[nodiscard]] std::int64_t intermediate() const { return intermediate_; }

 private:
  [[nodiscard]] std::size_t matrix_size() const { return static_cast<std::size_t>(hidden_ * intermediate_); }

  std::int64_t hidden_;
  std::int64_t intermediate_;
  typename Policy::template buffer<Weight> gate_up_;  ///< [2I x H]: W_gate then W_up
  typename Policy::template buffer<Weight> down_;     ///< [H x I]
  typename Policy::template buffer<float> gate_up_out_;
  typename Policy::template buffer<float> activated_;
};

static_assert(feed_forward<swiglu<>>);

}  // namespace ngemb
